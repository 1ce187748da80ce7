//! Minimal upstream proxies for the tests: an HTTP CONNECT proxy and a SOCKS5 proxy (no auth),
//! each recording the targets it was asked for and piping bytes both ways.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub struct Tunnel {
    pub port: u16,
    pub targets: Arc<Mutex<Vec<String>>>,
}

impl Tunnel {
    pub fn http_connect() -> Tunnel {
        Tunnel::spawn(|mut client| {
            let mut reader = BufReader::new(client.try_clone().ok()?);
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            let target = line
                .strip_prefix("CONNECT ")?
                .split_whitespace()
                .next()?
                .to_owned();
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).ok()?;
                if header == "\r\n" || header.is_empty() {
                    break;
                }
            }
            let upstream = TcpStream::connect(&target).ok()?;
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .ok()?;
            Some((target, client, upstream))
        })
    }

    pub fn socks5() -> Tunnel {
        Tunnel::spawn(|mut client| {
            let mut greeting = [0u8; 2];
            client.read_exact(&mut greeting).ok()?;
            let mut methods = vec![0u8; usize::from(greeting[1])];
            client.read_exact(&mut methods).ok()?;
            client.write_all(&[5, 0]).ok()?;
            let mut request = [0u8; 4];
            client.read_exact(&mut request).ok()?;
            let host = match request[3] {
                1 => {
                    let mut ip = [0u8; 4];
                    client.read_exact(&mut ip).ok()?;
                    std::net::Ipv4Addr::from(ip).to_string()
                }
                3 => {
                    let mut len = [0u8; 1];
                    client.read_exact(&mut len).ok()?;
                    let mut name = vec![0u8; usize::from(len[0])];
                    client.read_exact(&mut name).ok()?;
                    String::from_utf8(name).ok()?
                }
                _ => return None,
            };
            let mut port = [0u8; 2];
            client.read_exact(&mut port).ok()?;
            let target = format!("{host}:{}", u16::from_be_bytes(port));
            let upstream = TcpStream::connect(&target).ok()?;
            client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).ok()?;
            Some((target, client, upstream))
        })
    }

    fn spawn<F>(handshake: F) -> Tunnel
    where
        F: Fn(TcpStream) -> Option<(String, TcpStream, TcpStream)> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&targets);
        let handshake = Arc::new(handshake);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let seen = Arc::clone(&seen);
                let handshake = Arc::clone(&handshake);
                std::thread::spawn(move || {
                    let Some((target, client, upstream)) = handshake(conn) else {
                        return;
                    };
                    seen.lock().unwrap().push(target);
                    pipe(client, upstream);
                });
            }
        });
        Tunnel { port, targets }
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a_read, mut b_write) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let forward = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a_read, &mut b_write);
        let _ = b_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut b_read, mut a_write) = (b, a);
    let _ = std::io::copy(&mut b_read, &mut a_write);
    let _ = a_write.shutdown(std::net::Shutdown::Write);
    let _ = forward.join();
}
