//! `GET /ws/echo`, the WebSocket example: text and binary messages echo, and
//! a client's close is answered with the same code. (A service that drops the
//! example drops this file with it.)

use std::net::TcpStream;
use std::time::Duration;

use portbound::testing::{DEADLINE, scratch_dir, spawn_program};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn messages_echo_and_a_close_is_answered() {
    let dir = scratch_dir("app-ws");
    let p = spawn_program(
        std::path::Path::new(env!("CARGO_BIN_EXE_portbound")),
        &[],
        &[],
        &dir,
    );
    let addr = p.addr();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let (mut ws, res) = tungstenite::client(format!("ws://{addr}/ws/echo"), stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake with {addr}: {e}"));
    assert_eq!(res.status(), 101);
    for msg in [Message::text("hello"), Message::binary(vec![0u8, 1, 255])] {
        ws.send(msg.clone()).expect("send");
        assert_eq!(ws.read().expect("read"), msg);
    }
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    };
    ws.close(Some(normal)).expect("close");
    match ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the server's close, got {other:?}"),
    }
}
