//! Upstream TLS: the 4ALLPORTAL and OpenText clients against the simulators served over HTTPS
//! with a CA generated for this run. Without `ca_file` the unknown CA is refused; with it the
//! calls succeed; a server that requires a client certificate accepts the configured one and
//! refuses a client without it. Also: `check-config` names a missing or unreadable PEM file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use secrecy::SecretString;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};
use url::Url;
use xecm_bridge::clients::UpstreamError;
use xecm_bridge::clients::allportal::AllportalClient;
use xecm_bridge::clients::config::{
    AllportalConfig, OpentextAuth, OpentextConfig, TransportConfig,
};
use xecm_bridge::clients::opentext::OpentextClient;
use xecm_bridge::sim::allportal::{self, AllportalSimOptions, sample_catalogue};
use xecm_bridge::sim::opentext::{self, OpentextSimOptions};
use xecm_bridge::sim::{FaultSettings, SimHandle};

const API_KEY: &str = "tls-test-api-key";

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA and
/// written as PEM files into a temporary directory.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    client_cert_file: PathBuf,
    client_key_file: PathBuf,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

fn generate_pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "xecm-bridge test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    server_params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");

    let client_key = KeyPair::generate().expect("client key");
    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "xecm-bridge");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params
        .signed_by(&client_key, &issuer)
        .expect("client certificate");

    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    Pki {
        ca_file: write("ca.pem", ca_cert.pem()),
        client_cert_file: write("client.crt", client_cert.pem()),
        client_key_file: write("client.key", client_key.serialize_pem()),
        ca_der: ca_cert.der().clone(),
        server_der: server_cert.der().clone(),
        server_key_der: server_key.serialize_der(),
        _dir: dir,
    }
}

/// A TLS front on loopback that forwards every connection to `backend` (a plain-HTTP
/// simulator), optionally requiring a client certificate signed by the test CA.
async fn tls_front(pki: &Pki, backend: SocketAddr, require_client_cert: bool) -> SocketAddr {
    let provider = Arc::new(crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = if require_client_cert {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).expect("CA into root store");
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key_der.clone()));
    let config = builder
        .with_single_cert(vec![pki.server_der.clone()], key)
        .expect("server certificate and key");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake is what some tests expect; the client reports it.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut upstream) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                }
            });
        }
    });
    addr
}

/// No retries, so a refused handshake is reported at once.
fn transport() -> TransportConfig {
    TransportConfig {
        connect_timeout_secs: 5,
        request_timeout_secs: 10,
        max_retries: 0,
        backoff_base_ms: 10,
        backoff_max_ms: 100,
        circuit_failure_rate: 1.0,
        circuit_min_requests: 100,
        circuit_window_secs: 60,
        circuit_open_secs: 1,
    }
}

async fn allportal_sim() -> SimHandle {
    let opts = AllportalSimOptions {
        api_key: API_KEY.into(),
        seed: Some(sample_catalogue()),
        faults: FaultSettings::default(),
        ..Default::default()
    };
    allportal::spawn("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .expect("simulator starts")
}

struct Tls<'a> {
    ca: Option<&'a Path>,
    client: Option<(&'a Path, &'a Path)>,
}

fn allportal_client(front: SocketAddr, tls: Tls<'_>) -> AllportalClient {
    AllportalClient::new(&AllportalConfig {
        base_url: Url::parse(&format!("https://127.0.0.1:{}", front.port())).unwrap(),
        api_key: SecretString::from(API_KEY),
        ca_file: tls.ca.map(Path::to_path_buf),
        client_cert_file: tls.client.map(|(c, _)| c.to_path_buf()),
        client_key_file: tls.client.map(|(_, k)| k.to_path_buf()),
        max_requests_per_sec: 0.0,
        max_concurrent_requests: 0,
        rate_limit_replicas: 1,
        transport: transport(),
    })
    .expect("client builds")
}

fn assert_tls_refused(result: Result<impl std::fmt::Debug, UpstreamError>, what: &str) {
    let error = result.expect_err(what);
    let message = error.to_string().to_lowercase();
    assert!(
        message.contains("certificate")
            || message.contains("handshake")
            || message.contains("tls")
            || message.contains("connection"),
        "{what}: expected a TLS failure, got: {error}"
    );
}

#[tokio::test]
async fn allportal_over_tls_needs_the_configured_ca() {
    let pki = generate_pki();
    let sim = allportal_sim().await;
    let front = tls_front(&pki, sim.addr, false).await;

    let untrusting = allportal_client(
        front,
        Tls {
            ca: None,
            client: None,
        },
    );
    assert_tls_refused(
        untrusting.module_schema("product").await,
        "a server certificate from an unknown CA is refused",
    );

    let trusting = allportal_client(
        front,
        Tls {
            ca: Some(&pki.ca_file),
            client: None,
        },
    );
    let schema = trusting
        .module_schema("product")
        .await
        .expect("with ca_file the call succeeds over TLS");
    assert_eq!(schema.name, "product");
    assert!(
        !schema.fields.is_empty(),
        "the schema came through TLS whole"
    );
}

#[tokio::test]
async fn allportal_presents_the_configured_client_certificate() {
    let pki = generate_pki();
    let sim = allportal_sim().await;
    let front = tls_front(&pki, sim.addr, true).await;

    let anonymous = allportal_client(
        front,
        Tls {
            ca: Some(&pki.ca_file),
            client: None,
        },
    );
    assert_tls_refused(
        anonymous.module_schema("product").await,
        "a server that requires a client certificate refuses a client without one",
    );

    let identified = allportal_client(
        front,
        Tls {
            ca: Some(&pki.ca_file),
            client: Some((&pki.client_cert_file, &pki.client_key_file)),
        },
    );
    let schema = identified
        .module_schema("product")
        .await
        .expect("with a client certificate the call succeeds");
    assert_eq!(schema.name, "product");
}

#[tokio::test]
async fn opentext_over_tls_with_ca_and_client_certificate() {
    let pki = generate_pki();
    let sim = opentext::spawn(
        "127.0.0.1:0".parse().unwrap(),
        OpentextSimOptions::default(),
    )
    .await
    .expect("simulator starts");
    let front = tls_front(&pki, sim.addr, true).await;
    let config = |ca: Option<&Path>| OpentextConfig {
        base_url: Url::parse(&format!("https://127.0.0.1:{}/otcs/cs", front.port())).unwrap(),
        auth: OpentextAuth::Otcs,
        username: opentext::SAMPLE_ADMIN_USER.into(),
        password: SecretString::from(opentext::SAMPLE_ADMIN_PASSWORD),
        domain: None,
        otds_url: None,
        client_id: None,
        client_secret: None,
        ext_system_id: "4ALLPORTAL".into(),
        multipart_threshold_bytes: 64 << 20,
        multipart_part_bytes: 16 << 20,
        ca_file: ca.map(Path::to_path_buf),
        client_cert_file: Some(pki.client_cert_file.clone()),
        client_key_file: Some(pki.client_key_file.clone()),
        max_requests_per_sec: 0.0,
        max_concurrent_requests: 0,
        rate_limit_replicas: 1,
        transport: transport(),
    };

    let untrusting = OpentextClient::new(&config(None)).expect("client builds");
    assert_tls_refused(
        untrusting
            .node(opentext::sample_ids::WORKSPACES_FOLDER)
            .await,
        "unknown CA refused",
    );

    let client = OpentextClient::new(&config(Some(&pki.ca_file))).expect("client builds");
    client
        .node(opentext::sample_ids::WORKSPACES_FOLDER)
        .await
        .expect("login and a node read succeed over mutual TLS");
    assert_eq!(client.logins(), 1, "the OTCS login went through TLS too");
}

/// `check-config` reads the PEM files: a missing one is named by its key, a file that holds
/// no certificate is refused before the service would start.
#[test]
fn check_config_names_a_missing_or_broken_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.pem");
    std::fs::write(&broken, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (file, expected) in [
        (&missing, "allportal.ca_file"),
        (&broken, "holds no PEM certificate"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
            .arg("check-config")
            .env("XECM_BRIDGE__ALLPORTAL__CA_FILE", file)
            .env(
                "XECM_BRIDGE__SOURCES__ALLPORTAL__SECRETS",
                "[\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]",
            )
            .env(
                "XECM_BRIDGE__SOURCES__OPENTEXT__SECRETS",
                "[\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]",
            )
            .env_remove("XECM_BRIDGE_CONFIG")
            .output()
            .expect("run check-config");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{file:?} must fail check-config");
        assert!(
            stderr.contains(expected),
            "{file:?}: stderr names `{expected}`: {stderr}"
        );
    }
}
