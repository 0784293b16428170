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
        ahead.buf.is_none(),
        "drained: the buffer went back to the pool"
    );

    // A read that finds nothing holds nothing while it waits.
    let mut one = [0u8; 1];
    let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), ahead.read(&mut one));
    assert!(waiting.await.is_err(), "nothing to read yet");
    assert!(ahead.buf.is_none());

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
    assert!(ahead.buf.is_none(), "no copy through the buffer");
}
