//! `xecm-bridge demo` as a user runs it: the real binary, its exit code and its output.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);
const FLOWS: [&str; 7] = [
    "launch",
    "account",
    "change",
    "compliance",
    "partner",
    "family",
    "archival",
];

#[test]
fn demo_runs_every_flow_and_exits_zero() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
        .arg("demo")
        .env_remove("RUST_LOG")
        .env_remove("XECM_BRIDGE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // Read the pipes on their own threads so a full pipe can never stall the child.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`xecm-bridge demo` did not finish within {} s",
                LIMIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().expect("stdout thread").expect("stdout is UTF-8");
    let stderr = err.join().expect("stderr thread").expect("stderr is UTF-8");
    assert!(
        status.success(),
        "exit {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for flow in FLOWS {
        assert!(
            stdout
                .lines()
                .any(|line| line.contains(&format!("✓ {flow} "))),
            "no passed row for `{flow}` in:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("all seven flows reached their expected end state"),
        "{stdout}"
    );
    assert!(
        stdout.contains("new version in 3 workspaces holding it"),
        "the datasheet revision reaches launch, compliance and account: {stdout}"
    );
    assert!(
        !stdout.contains('\u{1b}'),
        "colour codes in output that is not a terminal"
    );
}
