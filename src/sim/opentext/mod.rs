//! placeholder
use std::net::SocketAddr;
#[derive(Debug, Clone, Default)]
pub struct OpentextSeed;
#[derive(Debug, Clone, Default)]
pub struct OpentextSimOptions {
    pub callback_url: Option<url::Url>,
    pub callback_secret: Option<String>,
    pub seed: OpentextSeed,
}
pub async fn spawn(
    _listen: SocketAddr,
    _opts: OpentextSimOptions,
) -> anyhow::Result<super::SimHandle> {
    anyhow::bail!("x")
}
