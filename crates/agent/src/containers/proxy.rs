//! A deployment's stable address: a TCP listener that forwards every connection to the
//! container of the live revision. Switching the target is atomic; connections already
//! open stay with the container they reached.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    target: watch::Sender<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on `address` and forwards to `target`.
    pub async fn start(address: SocketAddr, target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(address).await?;
        let (tx, rx) = watch::channel(target);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let to = *rx.borrow();
                tokio::spawn(forward(client, to));
            }
        });
        Ok(Proxy { target: tx, task })
    }

    /// New connections go to `target` from now on.
    pub fn point_to(&self, target: SocketAddr) {
        self.target.send_replace(target);
    }

    /// Stops listening.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn forward(mut client: TcpStream, to: SocketAddr) {
    let _ = client.set_nodelay(true);
    let Ok(mut upstream) = TcpStream::connect(to).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    async fn read_from(addr: SocketAddr) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    }

    #[tokio::test]
    async fn switches_targets() {
        let (a, b) = (echo_server(b"a").await, echo_server(b"b").await);
        let free = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = free.local_addr().expect("addr");
        drop(free);
        let proxy = Proxy::start(address, a).await.expect("start");
        assert_eq!(read_from(address).await, b"a");
        proxy.point_to(b);
        assert_eq!(read_from(address).await, b"b");
        proxy.stop();
    }
}
