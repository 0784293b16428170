//! The two tokens and a crash on the first start: the agent token registers agents and nothing
//! else, clusters from before it keep their one token, and a first start that fails between
//! making the CA and keeping its secret leaves a server that starts again.

use weft_api::JoinToken;
use weft_api::token::AGENT_USER;
use weft_control::ControlError;

use crate::harness::{ServerOptions, TestNode, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_token_registers_agents_and_is_written_to_its_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(ServerOptions::embedded(dir.path()))
        .await
        .expect("the server starts");
    let agent_token = &server.agent_token.clone();
    assert_eq!(agent_token.user, AGENT_USER);
    assert_eq!(agent_token.ca_hash, server.token.ca_hash);
    assert_ne!(agent_token.secret, server.token.secret);
    let file = std::fs::read_to_string(&server.agent_token_file).expect("the agent-token file");
    assert_eq!(file.trim(), agent_token.to_string());
    assert!(
        file.starts_with("K10") && file.contains("::node:"),
        "{file}"
    );

    let node = TestNode::new("node-a", 1);
    node.join(&[&server.url], agent_token)
        .await
        .expect("the agent token registers an agent");
    // A cluster made before the agent token: its agents hold the server token, and still join.
    TestNode::new("node-b", 2)
        .join(&[&server.url], &server.token)
        .await
        .expect("the server token still registers an agent");

    // A restart keeps the same agent token.
    let server = server.restart().await.expect("the server restarts");
    assert_eq!(server.agent_token, *agent_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_cannot_start_a_server() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(ServerOptions::embedded(dir.path()))
        .await
        .expect("the server starts");
    let agent_token = server.agent_token.clone();
    let mut options = server.stop().await;

    // As given: K10<hash>::node:<secret>.
    options.token = Some(agent_token.clone());
    let refused = TestServer::start(options.clone())
        .await
        .err()
        .expect("an agent token does not start a server");
    assert!(
        matches!(refused, ControlError::AgentTokenForServer),
        "{refused}"
    );
    // Its bare secret does not unseal the cluster's CA either.
    options.token = Some(JoinToken::parse(&agent_token.secret).expect("a bare secret"));
    let refused = TestServer::start(options.clone())
        .await
        .err()
        .expect("the agent secret does not open the bootstrap data");
    assert!(matches!(refused, ControlError::WrongToken), "{refused}");
    // Nor does a server token carrying the agent's secret.
    options.token = Some(JoinToken::server(
        agent_token.ca_hash.as_deref().expect("a hash"),
        &agent_token.secret,
    ));
    let refused = TestServer::start(options)
        .await
        .err()
        .expect("the agent secret does not open the bootstrap data");
    assert!(matches!(refused, ControlError::WrongToken), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_agent_token_is_kept_and_a_different_one_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut options = ServerOptions::embedded(dir.path());
    options.agent_token = Some(JoinToken::parse("my-agent-secret").expect("a bare secret"));
    let server = TestServer::start(options).await.expect("the server starts");
    assert_eq!(server.agent_token.secret, "my-agent-secret");
    TestNode::new("node-a", 1)
        .join(
            &[&server.url],
            &JoinToken::parse("my-agent-secret").expect("a bare secret"),
        )
        .await
        .expect("the given agent token registers an agent");

    let mut options = server.stop().await;
    options.agent_token = Some(JoinToken::parse("another-secret").expect("a bare secret"));
    let refused = TestServer::start(options)
        .await
        .err()
        .expect("a different agent token is refused");
    assert!(
        matches!(refused, ControlError::AgentTokenMismatch),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_that_cannot_keep_its_token_commits_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = ServerOptions::embedded(dir.path());
    // The token file can't be written, as if the server crashed before it wrote it: a
    // directory stands where the atomic write puts its temporary file.
    let in_the_way = dir
        .path()
        .join("server")
        .join(format!(".token.{}.tmp", std::process::id()));
    std::fs::create_dir_all(in_the_way.join("x")).expect("a directory in the way");
    let refused = TestServer::start(options.clone())
        .await
        .err()
        .expect("the first start fails");
    assert!(matches!(refused, ControlError::File { .. }), "{refused}");

    // Once the way is clear, the server starts: nothing was sealed with a secret it lost.
    std::fs::remove_dir_all(&in_the_way).expect("clear the way");
    let server = TestServer::start(options)
        .await
        .expect("the server starts after a failed first start");
    let saved = std::fs::read_to_string(&server.token_file).expect("the token file");
    assert_eq!(saved.trim(), server.token.to_string());
    // And again, with the token it kept.
    server.restart().await.expect("the server restarts");
}
