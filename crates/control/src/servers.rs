//! Which servers the cluster has: each server records its URL in the store while it runs, so
//! agents learn every server and fail over between them.

use weft_store::{Store, StoreError, Txn};

/// The prefix of server records.
pub const SERVERS_PREFIX: &str = "/weft/servers/";

/// The store key of a server URL (`https://10.0.0.1:9345` → `/weft/servers/10.0.0.1:9345`).
fn key(url: &str) -> String {
    let host_port = url.trim_start_matches("https://").trim_end_matches('/');
    format!("{SERVERS_PREFIX}{}", host_port.replace('/', "_"))
}

/// Records that the server at `url` is serving.
pub async fn register_server(store: &Store, url: &str) -> Result<(), StoreError> {
    store
        .kv()
        .txn(Txn::new().put(key(url), url.as_bytes().to_vec()))
        .await?;
    Ok(())
}

/// Removes the record of the server at `url` (on a clean stop).
pub async fn unregister_server(store: &Store, url: &str) -> Result<(), StoreError> {
    store.kv().txn(Txn::new().delete(key(url))).await?;
    Ok(())
}

/// Every server's URL.
pub async fn list_servers(store: &Store) -> Result<Vec<String>, StoreError> {
    let listed = store.kv().list(SERVERS_PREFIX).await?;
    Ok(listed
        .items
        .into_iter()
        .filter_map(|kv| String::from_utf8(kv.value).ok())
        .collect())
}
