//! Building the API client: `--kubeconfig` (env `GPUSCOUT_KUBECONFIG`) or the in-cluster service
//! account (`/var/run/secrets/kubernetes.io/serviceaccount`, `KUBERNETES_SERVICE_HOST`). Outside
//! a pod and without a kubeconfig this is [`Error::NoCluster`], which `serve` turns into
//! "standalone exporter". kube's built-in retry layer is switched off: [`super::LabelSync`]
//! retries itself, with one request in flight, so there is exactly one retry loop, and it
//! bounds every request itself, so no read timeout is set on the client.

use super::Error;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::Path;

/// Connect with a kubeconfig file, or in-cluster when `kubeconfig` is `None`.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, Error> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => {
            if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
                return Err(Error::NoCluster);
            }
            Config::incluster().map_err(Error::InCluster)?
        }
    };
    config.default_retry = false;
    // kube 5 sets no read timeout by default; keep it so (a read timeout shorter than a quiet
    // watch's 300-600 s would cut it). The sync loop bounds every request itself: 10 s, and a
    // watch's own timeout + 30 s of silence.
    config.read_timeout = None;
    Client::try_from(config).map_err(Error::Client)
}
