//! Tests of [`ReadAhead`]: small reads see every byte in order from few large reads of the
//! stream, and no buffer is held while nothing is unread.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[tokio::test]
async fn small_reads_see_every_byte_and_idle_holds_no_buffer() {
    let (mut far, near) = tokio::io::duplex(1 << 20);
    let mut ahead = ReadAhead::new(near);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    far.write_all(&data).await.expect("write");
    let mut back = Vec::new();
    let mut small = [0u8; 4096];
    while back.len() < data.len() {
        let n = ahead.read(&mut small).await.expect("read");
        back.extend_from_slice(&small[..n]);
    }
    assert!(back == data, "every byte, in order");
    assert!(
        !ahead.ahead.holds_buffer(),
        "drained: the buffer went back to the pool"
    );

    // A read that finds nothing holds nothing while it waits.
    let mut one = [0u8; 1];
    let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), ahead.read(&mut one));
    assert!(waiting.await.is_err(), "nothing to read yet");
    assert!(!ahead.ahead.holds_buffer());

    // Writes pass through; the end of the stream reads as zero.
    ahead.write_all(b"back").await.expect("write");
    let mut four = [0u8; 4];
    far.read_exact(&mut four).await.expect("read");
    assert_eq!(&four, b"back");
    drop(far);
    assert_eq!(ahead.read(&mut small).await.expect("eof"), 0);
}

#[tokio::test]
async fn large_reads_go_straight_through() {
    let (mut far, near) = tokio::io::duplex(1 << 20);
    let mut ahead = ReadAhead::new(near);
    far.write_all(&[7u8; 100_000]).await.expect("write");
    let mut big = vec![0u8; pool::BUFFER_SIZE];
    let n = ahead.read(&mut big).await.expect("read");
    assert!(n > 0);
    assert!(!ahead.ahead.holds_buffer(), "no copy through the buffer");
}

#[test]
fn a_window_holds_a_buffer_only_while_bytes_wait_and_compacts_for_room() {
    let mut window = pool::Window::default();
    assert!(window.is_empty() && !window.holds_buffer());
    let room = window.room();
    assert_eq!(room.len(), pool::BUFFER_SIZE);
    room[..5].copy_from_slice(b"hello");
    window.filled(5);
    assert_eq!(window.bytes(), b"hello");
    window.consume(2);
    assert_eq!(window.bytes(), b"llo");
    window.release_if_empty();
    assert!(window.holds_buffer(), "bytes still wait");
    // Fill to the end: the waiting bytes move to the front to make room.
    let rest = window.room().len();
    window.filled(rest);
    assert_eq!(window.bytes().len(), pool::BUFFER_SIZE - 2);
    assert_eq!(window.room().len(), 2);
    assert_eq!(&window.bytes()[..3], b"llo");
    window.consume(pool::BUFFER_SIZE);
    assert!(window.is_empty());
    window.release_if_empty();
    assert!(!window.holds_buffer());
    assert_eq!(window.bytes(), b"");
}
