//! The back ends the suite runs against: an embedded store in a temporary directory, or a real
//! etcd that the test starts on loopback ports and kills on drop, plain or over TLS with
//! `--client-cert-auth`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;
use weft_store::testing::EtcdServer;
use weft_store::{EmbeddedOptions, EmbeddedStore, EtcdStore, Kv, Store};

/// Generates `embedded`, `etcd` and `etcd_tls` tests that run `$test(Backend)` against each
/// back end.
#[macro_export]
macro_rules! both_backends {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$test($crate::harness::Backend::embedded().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$test($crate::harness::Backend::etcd().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd_tls() {
                super::$test($crate::harness::Backend::etcd_tls().await).await;
            }
        }
    )*};
}

/// One back end under test.
pub(crate) enum Backend {
    /// A store file in a temporary directory.
    Embedded { dir: TempDir },
    /// A real etcd, plain or over TLS.
    Etcd { server: EtcdServer },
}

impl Backend {
    /// An empty embedded store.
    pub(crate) async fn embedded() -> Backend {
        Backend::Embedded {
            dir: tempfile::tempdir().expect("create a temporary directory"),
        }
    }

    /// An empty etcd, started for this test.
    pub(crate) async fn etcd() -> Backend {
        Backend::Etcd {
            server: EtcdServer::start().await,
        }
    }

    /// An empty etcd on `https://` with `--client-cert-auth`, started for this test; handles
    /// connect with its CA and a client certificate.
    pub(crate) async fn etcd_tls() -> Backend {
        Backend::Etcd {
            server: EtcdServer::start_tls().await,
        }
    }

    /// Which back end this is, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Embedded { .. } => "embedded",
            Backend::Etcd { server } if server.client_url.starts_with("https://") => "etcd (TLS)",
            Backend::Etcd { .. } => "etcd",
        }
    }

    /// A new handle: another open of the same file, or a new etcd connection.
    pub(crate) async fn kv(&self) -> Arc<dyn Kv> {
        match self {
            Backend::Embedded { dir } => Arc::new(
                EmbeddedStore::open_file(embedded_path(dir.path()), EmbeddedOptions::default())
                    .await
                    .expect("open the embedded store"),
            ),
            Backend::Etcd { server } => Arc::new(
                EtcdStore::connect_tls(
                    std::slice::from_ref(&server.client_url),
                    &server.client_tls(),
                )
                .await
                .expect("connect to etcd"),
            ),
        }
    }

    /// A typed store on a new handle.
    pub(crate) async fn store(&self) -> Store {
        Store::new(self.kv().await)
    }

    /// Restarts the back end under its data: etcd is killed and started again on the same
    /// data dir and ports. The embedded file needs nothing: it closes when the caller drops
    /// every handle, and the next [`Backend::kv`] opens it again.
    pub(crate) async fn restart(&mut self) {
        if let Backend::Etcd { server } = self {
            server.restart().await;
        }
    }
}

/// The store file inside a test's data dir.
pub(crate) fn embedded_path(data_dir: &Path) -> PathBuf {
    data_dir.join(weft_store::EMBEDDED_FILE)
}
