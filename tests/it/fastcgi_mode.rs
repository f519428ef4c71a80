//! FastCGI mode: the protocol as seen by a web server, against the
//! builtin handlers (`hello`, `echo`, `env`).

use std::io::Read;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::fcgi::{self, Padding};
use crate::util::{
    compare_bytes, is_timeout, pattern_bytes, show, Conn, Response, Server,
    EXIT_TIMEOUT,
};

/// The exact stdout of the `hello` builtin.
const HELLO: &[u8] =
    b"Content-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";

/// Time limit for the server to close a connection it should close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit for an expected log line to show up.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// The stdout `echo` must produce for `body`, with or without a
/// CONTENT_LENGTH param.
fn echo_expected(body: &[u8], with_length: bool) -> Vec<u8> {
    let mut out = b"Content-Type: application/octet-stream\r\n".to_vec();
    if with_length {
        out.extend_from_slice(
            format!("Content-Length: {}\r\n", body.len()).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn check_hello(c: &Conn, r: &Response) {
    c.check_complete(r);
    if r.stdout != HELLO {
        c.fail(&format!(
            "hello stdout: got {}, want {}",
            show(&r.stdout, 300),
            show(HELLO, 300)
        ));
    }
}

/// Echo `body` (CONTENT_LENGTH set) and check the bytes come back.
fn check_echo(c: &mut Conn, id: u16, body: &[u8]) {
    let len = body.len().to_string();
    let r = c.request_ok(
        id,
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", &len)],
        body,
    );
    if let Some(d) = compare_bytes(&r.stdout, &echo_expected(body, true)) {
        c.fail(&format!("echo of a {}-byte body: {d}", body.len()));
    }
}

/// Fail unless some line of the `env` page mentions both `name` and
/// `value` (the page's exact format is not fixed).
fn check_env_has(c: &Conn, r: &Response, name: &str, value: &str) {
    let page = r.stdout_str();
    if !page.lines().any(|l| l.contains(name) && l.contains(value)) {
        c.fail(&format!(
            "env page has no line with {name:?} and {value:?}:\n{page}"
        ));
    }
}

// ---------------------------------------------------------------------
// Basic responses
// ---------------------------------------------------------------------

#[test]
fn hello_over_unix_socket_gives_exact_stdout() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    let r = c.request(1, &[("REQUEST_METHOD", "GET")], b"");
    check_hello(&c, &r);
    // Exactly one END_REQUEST, last, after the empty STDOUT record.
    let n = r.records.len();
    let ends = r
        .records
        .iter()
        .filter(|x| x.rtype == fcgi::END_REQUEST)
        .count();
    let last_stdout = r
        .records
        .iter()
        .rposition(|x| x.rtype == fcgi::STDOUT)
        .unwrap();
    if ends != 1
        || r.records[n - 1].rtype != fcgi::END_REQUEST
        || !r.records[last_stdout].content.is_empty()
    {
        c.fail(&format!("bad record sequence: {:?}", r.records));
    }
    srv.assert_no_panic();
}

#[test]
fn hello_over_tcp_gives_exact_stdout() {
    let srv = Server::tcp(&["--builtin", "hello"]);
    let mut c = srv.connect();
    let r = c.request(1, &[("REQUEST_METHOD", "GET")], b"");
    check_hello(&c, &r);
}

#[test]
fn echo_returns_body_and_content_length() {
    let srv = Server::unix(&["--builtin", "echo"]);
    let mut c = srv.connect();
    check_echo(&mut c, 1, b"a=1&b=2\r\n\0\xff binary");
    check_echo(&mut c, 2, b"");
    check_echo(&mut c, 3, &pattern_bytes(5000, 7));
}

#[test]
fn echo_without_content_length_param_omits_header() {
    let srv = Server::unix(&["--builtin", "echo"]);
    let mut c = srv.connect();
    let body = b"no length given";
    let r = c.request_ok(1, &[("REQUEST_METHOD", "POST")], body);
    if let Some(d) = compare_bytes(&r.stdout, &echo_expected(body, false)) {
        c.fail(&format!("echo without CONTENT_LENGTH: {d}"));
    }
}

#[test]
fn env_page_lists_received_params() {
    let srv = Server::unix(&["--builtin", "env"]);
    let mut c = srv.connect();
    let params = [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/envtest"),
        ("QUERY_STRING", "alpha=1"),
        ("HTTP_X_PROBE", "probe-7d3f"),
        ("CUSTOM_NAME_42", "custom-value-42"),
    ];
    let r = c.request_ok(1, &params, b"");
    let cgi = r.cgi();
    if cgi.status() != Some(200) {
        c.fail(&format!("env status not 200: {cgi:?}"));
    }
    for (n, v) in params {
        check_env_has(&c, &r, n, v);
    }
}

// ---------------------------------------------------------------------
// Management records
// ---------------------------------------------------------------------

#[test]
fn get_values_reports_asked_known_names_only() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    let got = c.get_values(&[
        "FCGI_MAX_CONNS",
        "FCGI_MAX_REQS",
        "FCGI_MPXS_CONNS",
        "FCGI_NO_SUCH_VARIABLE",
    ]);
    let mut names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    if names != ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"] {
        c.fail(&format!("GET_VALUES_RESULT names: {got:?}"));
    }
    for (n, v) in &got {
        let ok = match n.as_str() {
            "FCGI_MPXS_CONNS" => v == "0",
            _ => v.parse::<u64>().is_ok_and(|x| x > 0),
        };
        if !ok {
            c.fail(&format!("bad value for {n}: {v:?} (all: {got:?})"));
        }
    }
    // The connection still serves a request afterwards.
    let r = c.request(1, &[], b"");
    check_hello(&c, &r);
}

#[test]
fn get_values_answers_only_the_name_asked() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    let got = c.get_values(&["FCGI_MPXS_CONNS"]);
    if got != [("FCGI_MPXS_CONNS".to_string(), "0".to_string())] {
        c.fail(&format!("asked FCGI_MPXS_CONNS only, got {got:?}"));
    }
    let got = c.get_values(&["FCGI_MAX_REQS"]);
    if got.len() != 1 || got[0].0 != "FCGI_MAX_REQS" {
        c.fail(&format!("asked FCGI_MAX_REQS only, got {got:?}"));
    }
    let got = c.get_values(&["NOT_A_FASTCGI_VARIABLE"]);
    if !got.is_empty() {
        c.fail(&format!("asked an unknown name only, got {got:?}"));
    }
}

#[test]
fn get_values_is_answered_while_a_request_is_in_flight() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    c.begin_responder(1);
    c.send_record(fcgi::PARAMS, 1, &fcgi::nv_pairs(&[("A", "1")]));
    let got = c.get_values(&["FCGI_MPXS_CONNS"]);
    if got != [("FCGI_MPXS_CONNS".to_string(), "0".to_string())] {
        c.fail(&format!("GET_VALUES mid-request: {got:?}"));
    }
    c.send_record(fcgi::PARAMS, 1, &[]);
    c.stdin(1, b"");
    let r = c.read_response(1);
    check_hello(&c, &r);
}

#[test]
fn unknown_management_record_types_get_unknown_type() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    for (t, content) in
        [(42u8, &b"xyz"[..]), (12, &b""[..]), (200, &b"\0"[..])]
    {
        c.send_record(t, 0, content);
        let rec = c.next_record_for(0, &format!("UNKNOWN_TYPE for type {t}"));
        if rec.rtype != fcgi::UNKNOWN_TYPE
            || rec.content.len() != 8
            || rec.content[0] != t
            || rec.content[1..] != [0; 7]
        {
            c.fail(&format!("for record type {t} on id 0, got {rec:?}"));
        }
    }
    let r = c.request(1, &[], b"");
    check_hello(&c, &r);
}

// ---------------------------------------------------------------------
// Roles, multiplexing, connection reuse
// ---------------------------------------------------------------------

#[test]
fn second_request_id_while_one_in_flight_gets_cant_mpx_conn() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    c.begin_responder(1);
    c.begin(2, fcgi::RESPONDER, fcgi::KEEP_CONN);
    c.params(1, &[("REQUEST_METHOD", "GET")]);
    c.stdin(1, b"");
    let r1 = c.read_response(1);
    check_hello(&c, &r1);
    let r2 = c.read_response(2);
    if r2.protocol_status != fcgi::CANT_MPX_CONN
        || !r2.stdout.is_empty()
        || r2.records.len() != 1
    {
        c.fail(&format!(
            "second concurrent request: want only END_REQUEST with \
             CANT_MPX_CONN, got {:?}",
            r2.records
        ));
    }
    // The connection is still usable.
    let r3 = c.request(3, &[], b"");
    check_hello(&c, &r3);
}

#[test]
fn unknown_roles_get_unknown_role_and_connection_stays_usable() {
    let srv = Server::unix(&["--builtin", "hello"]);
    for role in [fcgi::AUTHORIZER, fcgi::FILTER, 99, 0] {
        let mut c = srv.connect();
        c.begin(1, role, fcgi::KEEP_CONN);
        let r = c.read_response(1);
        if r.protocol_status != fcgi::UNKNOWN_ROLE || !r.stdout.is_empty() {
            c.fail(&format!(
                "role {role}: want END_REQUEST with UNKNOWN_ROLE, got {:?}",
                r.records
            ));
        }
        let r = c.request(2, &[], b"");
        check_hello(&c, &r);
    }
}

/// After refusing a request on a connection not to be kept, the server
/// reads what the peer still sends until it closes, so that its answer
/// is not destroyed by a reset; a peer that never closes holds the
/// (only) worker for a bounded moment, not for the I/O timeout.
#[test]
fn refused_peer_that_never_closes_holds_its_worker_briefly() {
    let srv =
        Server::unix(&["--builtin", "hello", "-w", "1", "--io-timeout", "60"]);
    let mut refused = srv.connect();
    refused.begin(1, fcgi::AUTHORIZER, 0);
    let r = refused.read_response(1);
    if r.protocol_status != fcgi::UNKNOWN_ROLE {
        refused.fail(&format!("want UNKNOWN_ROLE, got {:?}", r.records));
    }
    // `refused` stays open and silent. The next client is still served
    // (within the client's read time limit, far below 60 s).
    let t = Instant::now();
    let mut c = srv.connect();
    let r = c.request(1, &[], b"");
    check_hello(&c, &r);
    if t.elapsed() >= Duration::from_secs(10) {
        c.fail(&format!("answered after {:?}", t.elapsed()));
    }
    drop(refused);
    srv.assert_no_panic();
}

#[test]
fn unknown_role_with_params_and_stdin_sent_gets_unknown_role_once() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    // What a web server sends in one go, without KEEP_CONN.
    c.begin(1, fcgi::AUTHORIZER, 0);
    c.params(1, &[("REQUEST_METHOD", "GET")]);
    c.stdin(1, b"");
    let r = c.read_response(1);
    if r.protocol_status != fcgi::UNKNOWN_ROLE || !r.stdout.is_empty() {
        c.fail(&format!("want UNKNOWN_ROLE, got {:?}", r.records));
    }
    // Nothing more comes for it; without KEEP_CONN the server closes.
    let rest = c.expect_closed(CLOSE_TIMEOUT);
    if !rest.is_empty() {
        c.fail(&format!("data after END_REQUEST: {}", show(&rest, 300)));
    }
    let r = srv.connect().request(1, &[], b"");
    check_hello(&c, &r);
}

#[test]
fn keep_conn_serves_sequential_requests_on_one_connection() {
    let srv = Server::unix(&["--builtin", "echo"]);
    let mut c = srv.connect();
    for i in 1..=6u16 {
        let body = pattern_bytes(100 * i as usize, i as u64);
        check_echo(&mut c, i, &body);
    }
    // Same request id again.
    check_echo(&mut c, 1, b"again");
    // The last one without KEEP_CONN: the server closes afterwards, and
    // nothing extra (e.g. a second END_REQUEST) is sent.
    c.keep_conn = false;
    check_echo(&mut c, 7, b"last");
    let rest = c.expect_closed(CLOSE_TIMEOUT);
    if !rest.is_empty() {
        c.fail(&format!("data after END_REQUEST: {}", show(&rest, 300)));
    }
}

#[test]
fn without_keep_conn_server_closes_after_end_request() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    c.keep_conn = false;
    let r = c.request(1, &[], b"");
    check_hello(&c, &r);
    let rest = c.expect_closed(CLOSE_TIMEOUT);
    if !rest.is_empty() {
        c.fail(&format!("data after END_REQUEST: {}", show(&rest, 300)));
    }
}

/// `hello` never reads the body: the rest of it (records for a request
/// already ended) must be skipped, and the next request served.
#[test]
fn unread_body_is_skipped_before_the_next_request() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    let body = pattern_bytes(300_000, 5);
    let len = body.len().to_string();
    let params =
        [("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", len.as_str())];
    let r = c.request(1, &params, &body);
    check_hello(&c, &r);
    let r = c.request(2, &params, &body);
    check_hello(&c, &r);
    let r = c.request(1, &[], b"");
    check_hello(&c, &r);
}

/// Without KEEP_CONN and with a large body left unread, the response
/// must still arrive whole before the connection is closed.
#[test]
fn unread_body_without_keep_conn_still_gets_whole_response() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    c.keep_conn = false;
    let body = pattern_bytes(2_000_000, 6);
    let len = body.len().to_string();
    let r = c.request(1, &[("CONTENT_LENGTH", len.as_str())], &body);
    check_hello(&c, &r);
    let rest = c.expect_closed(CLOSE_TIMEOUT);
    if !rest.is_empty() {
        c.fail(&format!("data after END_REQUEST: {}", show(&rest, 300)));
    }
}

// ---------------------------------------------------------------------
// ABORT_REQUEST
// ---------------------------------------------------------------------

#[test]
fn abort_during_params_ends_request_once_and_server_keeps_serving() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    c.begin_responder(1);
    c.send_record(fcgi::PARAMS, 1, &fcgi::nv_pairs(&[("SCRIPT_NAME", "/a")]));
    c.abort(1);
    let r = c.read_response(1);
    if !r.stdout.is_empty() {
        c.fail(&format!(
            "output for a request aborted before it ran: {:?}",
            r.records
        ));
    }
    // Another request on the same connection; any further record for
    // id 1 (output, a second END_REQUEST) fails the read.
    let r2 = c.request(2, &[], b"");
    check_hello(&c, &r2);
    let stray = c.take_stash();
    if !stray.is_empty() {
        c.fail(&format!("unexpected records: {stray:?}"));
    }
    c.keep_conn = false;
    let r3 = c.request(3, &[], b"");
    check_hello(&c, &r3);
    let rest = c.expect_closed(CLOSE_TIMEOUT);
    if !rest.is_empty() {
        c.fail(&format!(
            "data after last END_REQUEST: {}",
            show(&rest, 300)
        ));
    }
    let r = srv.connect().request(1, &[], b"");
    check_hello(&c, &r);
    srv.assert_no_panic();
}

#[test]
fn abort_during_body_ends_request_once_and_server_keeps_serving() {
    let srv = Server::unix(&["--builtin", "echo"]);
    let mut c = srv.connect();
    c.begin_responder(1);
    c.params(
        1,
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "1000000")],
    );
    let part = pattern_bytes(2 * 65535, 3);
    for chunk in part.chunks(65535) {
        c.send_record(fcgi::STDIN, 1, chunk);
    }
    c.abort(1);
    // Output before END_REQUEST is allowed (echo may stream); nothing
    // after it: the next request would see it and fail.
    let _ = c.read_response(1);
    check_echo(&mut c, 2, b"after abort");
    let stray = c.take_stash();
    if !stray.is_empty() {
        c.fail(&format!("unexpected records: {stray:?}"));
    }
    c.keep_conn = false;
    check_echo(&mut c, 3, b"last");
    let rest = c.expect_closed(CLOSE_TIMEOUT);
    if !rest.is_empty() {
        c.fail(&format!(
            "data after last END_REQUEST: {}",
            show(&rest, 300)
        ));
    }
    let mut fresh = srv.connect();
    check_echo(&mut fresh, 1, b"fresh");
    srv.assert_no_panic();
}

// ---------------------------------------------------------------------
// Params encoding
// ---------------------------------------------------------------------

#[test]
fn repeated_param_name_is_accepted_and_last_value_shows() {
    let srv = Server::unix(&["--builtin", "env"]);
    let mut c = srv.connect();
    let r = c.request_ok(
        1,
        &[
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", "/first-value"),
            ("SCRIPT_NAME", "/second-value"),
        ],
        b"",
    );
    if r.cgi().status() != Some(200) {
        c.fail(&format!("status not 200: {}", show(&r.stdout, 2000)));
    }
    check_env_has(&c, &r, "SCRIPT_NAME", "/second-value");
}

/// Params for the splitting tests: short pairs, and a name and a value
/// of 128 bytes and more (4-byte lengths).
fn split_test_params() -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = (0..20)
        .map(|i| (format!("SPLIT_NAME_{i}"), format!("split-value-{i}")))
        .collect();
    p.push(("REQUEST_METHOD".into(), "GET".into()));
    p.push((
        "LONG_VALUE".into(),
        format!("lv{}", "0123456789".repeat(30)),
    ));
    p.push((
        format!("LONG_NAME_{}", "N".repeat(150)),
        "long-name-value".into(),
    ));
    p
}

fn check_split_params(c: &Conn, r: &Response, p: &[(String, String)]) {
    c.check_complete(r);
    for (n, v) in p {
        check_env_has(c, r, n, v);
    }
}

#[test]
fn params_split_one_pair_per_record() {
    let srv = Server::unix(&["--builtin", "env"]);
    let mut c = srv.connect();
    let p = split_test_params();
    c.begin_responder(1);
    for (n, v) in &p {
        c.send_record(
            fcgi::PARAMS,
            1,
            &fcgi::nv_pair(n.as_bytes(), v.as_bytes()),
        );
    }
    c.send_record(fcgi::PARAMS, 1, &[]);
    c.stdin(1, b"");
    let r = c.read_response(1);
    check_split_params(&c, &r, &p);
}

#[test]
fn name_value_pairs_split_across_records() {
    let srv = Server::unix(&["--builtin", "env"]);
    let p = split_test_params();
    let pairs: Vec<(&str, &str)> =
        p.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    // One byte per record (lengths, 4-byte lengths included, are cut),
    // then awkward sizes.
    for (id, size) in [(1u16, 1usize), (2, 3), (3, 7), (4, 130)] {
        let mut c = srv.connect();
        c.max_record = size;
        let r = c.request(id, &pairs, b"");
        check_split_params(&c, &r, &p);
    }
}

#[test]
fn long_param_names_and_values_with_four_byte_lengths() {
    let srv = Server::unix(&["--builtin", "env"]);
    let mut c = srv.connect();
    let name = format!("HTTP_X_{}", "LONGNAME".repeat(40));
    let value = "v".repeat(10_000) + "-end-of-long-value";
    let r = c.request_ok(
        1,
        &[("REQUEST_METHOD", "GET"), (&name, &value), ("SHORT", "s")],
        b"",
    );
    check_env_has(&c, &r, &name, &value);
    check_env_has(&c, &r, "SHORT", "s");
}

// ---------------------------------------------------------------------
// Record framing and large bodies
// ---------------------------------------------------------------------

#[test]
fn records_with_padding_are_accepted() {
    let srv = Server::unix(&["--builtin", "echo"]);
    for (i, pad) in [Padding::Align8, Padding::Fixed(255), Padding::Fixed(1)]
        .into_iter()
        .enumerate()
    {
        let mut c = srv.connect();
        c.padding = pad;
        c.max_record = 1000;
        let body = pattern_bytes(3333, i as u64 + 10);
        check_echo(&mut c, 1, &body);
        let got = c.get_values(&["FCGI_MPXS_CONNS"]);
        if got.len() != 1 {
            c.fail(&format!("GET_VALUES with {pad:?}: {got:?}"));
        }
        check_echo(&mut c, 2, b"second");
    }
}

#[test]
fn stdin_records_of_maximum_size_are_accepted() {
    let srv = Server::unix(&["--builtin", "echo"]);
    let body = pattern_bytes(3 * 65535 + 17, 99);
    let mut c = srv.connect();
    check_echo(&mut c, 1, &body);
    // And with the largest padding too: records of 8+65535+255 bytes.
    c.padding = Padding::Fixed(255);
    check_echo(&mut c, 2, &body);
}

#[test]
fn ten_megabyte_body_is_echoed_byte_for_byte() {
    let srv = Server::unix(&["--builtin", "echo"]);
    let body = pattern_bytes(10 * 1024 * 1024, 0x5eed);
    let mut c = srv.connect();
    check_echo(&mut c, 1, &body);
    // The connection is fine afterwards.
    check_echo(&mut c, 2, b"small");
}

// ---------------------------------------------------------------------
// Many idle connections
// ---------------------------------------------------------------------

#[test]
fn idle_keep_alive_connections_do_not_pin_workers() {
    let srv = Server::unix(&["--builtin", "hello", "-w", "2"]);
    let mut idle = Vec::with_capacity(200);
    for i in 0..200 {
        let mut c = srv.connect();
        let r = c.request(1, &[], b"");
        if r.stdout != HELLO {
            c.fail(&format!("idle connection #{i}: bad first response"));
        }
        check_hello(&c, &r);
        idle.push(c);
    }
    // All 200 are open and idle; a new client is still answered (the
    // read time limit fails the test otherwise).
    let mut fresh = srv.connect();
    let r = fresh.request(1, &[], b"");
    check_hello(&fresh, &r);
    // Every idle connection can still be used.
    for c in &mut idle {
        let r = c.request(2, &[], b"");
        check_hello(c, &r);
    }
    srv.assert_no_panic();
}

/// Longest a request on an idle server may take in the tests below. A
/// request takes well under a millisecond; a worker waiting for events
/// without the listener in its epoll set would answer a new connection
/// only when its wait times out (0.5 s).
const PROMPT: Duration = Duration::from_millis(250);

/// One request on `c`; fails unless it is answered with the hello page
/// within [`PROMPT`].
fn prompt_hello(srv: &Server, c: &mut Conn, id: u16, what: &str) {
    let t = Instant::now();
    let r = c.request(id, &[], b"");
    let took = t.elapsed();
    check_hello(c, &r);
    if took > PROMPT {
        srv.fail(&format!("{what} was answered after {took:?}"));
    }
}

#[test]
fn new_connections_are_accepted_at_once_while_a_request_is_half_sent() {
    // Both workers wait in accept. One takes a connection whose request
    // stops halfway, parks it and waits for events; the other takes the
    // next connection and waits on it for more. A third connection must
    // still be taken at once: by the worker waiting for events, which
    // needs the listener back in its epoll set for that.
    let srv = Server::unix(&["--builtin", "hello", "-w", "2"]);
    for round in 0..3u16 {
        thread::sleep(Duration::from_millis(100));
        let mut half = srv.connect();
        half.begin_responder(1);
        half.send_record(fcgi::PARAMS, 1, &fcgi::nv_pairs(&[("A", "1")]));
        thread::sleep(Duration::from_millis(100));
        let mut kept = srv.connect();
        let what = format!("round {round}: a kept connection");
        prompt_hello(&srv, &mut kept, 1, &what);
        let mut fresh = srv.connect();
        fresh.keep_conn = false;
        let what = format!("round {round}: a new connection");
        prompt_hello(&srv, &mut fresh, 1, &what);
        half.send_record(fcgi::PARAMS, 1, &[]);
        half.stdin(1, b"");
        let r = half.read_response(1);
        check_hello(&half, &r);
    }
    srv.assert_no_panic();
}

#[test]
fn max_conns_is_held_and_waiting_connections_go_in_as_others_close() {
    let srv =
        Server::unix(&["--builtin", "hello", "-w", "2", "--max-conns", "2"]);
    let mut open: Vec<Conn> = (0..2).map(|_| srv.connect()).collect();
    for (i, c) in open.iter_mut().enumerate() {
        prompt_hello(&srv, c, 1, &format!("connection {i}"));
    }
    // Two more wait in the backlog: no answer while two are open.
    let mut waiting: Vec<Conn> = (0..2).map(|_| srv.connect()).collect();
    for c in &mut waiting {
        c.begin_responder(1);
        c.params(1, &[]);
        c.stdin(1, b"");
    }
    for c in &waiting {
        let mut probe = c.stream().try_clone().expect("clone");
        probe.set_read_timeout(Some(PROMPT)).expect("timeout");
        // A read with a timeout may end early with EINTR when something
        // stops and resumes the test process (signal(7)): read again.
        let got = loop {
            match probe.read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match got {
            Err(e) if is_timeout(&e) => {}
            other => srv.fail(&format!(
                "a connection past --max-conns 2 was answered: {other:?}"
            )),
        }
        probe
            .set_read_timeout(Some(CLOSE_TIMEOUT))
            .expect("timeout");
    }
    // Closing the two lets both in, at once.
    drop(open);
    let t = Instant::now();
    for c in &mut waiting {
        let r = c.read_response(1);
        check_hello(c, &r);
    }
    if t.elapsed() > PROMPT {
        let took = t.elapsed();
        srv.fail(&format!("the waiting connections went in after {took:?}"));
    }
    srv.assert_no_panic();
}

// ---------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------

#[test]
fn sigterm_while_idle_exits_zero_and_removes_socket() {
    let srv = Server::unix(&["--builtin", "hello"]);
    {
        let mut c = srv.connect();
        c.keep_conn = false;
        let r = c.request(1, &[], b"");
        check_hello(&c, &r);
        c.expect_closed(CLOSE_TIMEOUT);
    }
    srv.signal("TERM");
    let st = srv.expect_exit(EXIT_TIMEOUT);
    if st.code() != Some(0) {
        srv.fail(&format!("after SIGTERM: {st:?}, want exit status 0"));
    }
    if srv.socket_path().exists() {
        srv.fail("socket file still there after exit");
    }
    srv.assert_no_panic();
}

#[test]
fn sigterm_with_idle_keep_alive_connection_exits_promptly() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    let r = c.request(1, &[], b"");
    check_hello(&c, &r);
    // The connection stays open with no request in flight.
    srv.signal("TERM");
    let st = srv.expect_exit(EXIT_TIMEOUT);
    if st.code() != Some(0) {
        srv.fail(&format!("after SIGTERM: {st:?}, want exit status 0"));
    }
    if srv.socket_path().exists() {
        srv.fail("socket file still there after exit");
    }
    c.expect_closed(CLOSE_TIMEOUT);
}

// ---------------------------------------------------------------------
// Bad input: log naming the peer, close only that connection, go on
// ---------------------------------------------------------------------

/// Run one bad-input scenario against a TCP `hello` server: `misbehave`
/// sends something wrong on a fresh connection.  Then: the server logs a
/// line naming that peer, closes that connection (unless
/// `client_closes`, when the client has gone already), keeps another
/// open connection working, serves a new client, and never panics.
/// Returns the log line.
fn bad_input(
    client_closes: bool,
    misbehave: impl FnOnce(&mut Conn),
) -> String {
    bad_input_on(
        &Server::tcp(&["--builtin", "hello"]),
        client_closes,
        misbehave,
    )
}

fn bad_input_on(
    srv: &Server,
    client_closes: bool,
    misbehave: impl FnOnce(&mut Conn),
) -> String {
    // A well-behaved keep-alive client, connected before and used after.
    let mut bystander = srv.connect();
    let r = bystander.request(1, &[], b"");
    check_hello(&bystander, &r);

    let mut bad = srv.connect();
    let peer = bad.peer_name();
    misbehave(&mut bad);
    if !client_closes {
        bad.expect_closed(CLOSE_TIMEOUT);
    }
    drop(bad);
    let line = srv.expect_log_line(LOG_TIMEOUT, &[&peer]);

    let r = bystander.request(2, &[], b"");
    check_hello(&bystander, &r);
    let mut fresh = srv.connect();
    let r = fresh.request(1, &[], b"");
    check_hello(&fresh, &r);
    srv.assert_running();
    srv.assert_no_panic();
    line
}

#[test]
fn wrong_version_byte_is_logged_and_connection_closed() {
    let line = bad_input(false, |c| {
        let mut rec = fcgi::header(2, fcgi::BEGIN_REQUEST, 1, 8, 0).to_vec();
        rec.extend_from_slice(&fcgi::begin_body(fcgi::RESPONDER, 0));
        let _ = c.try_send_raw(&rec);
    });
    check_says(&line, &["version", "2"]);
}

/// Fail unless the log line mentions each of `words` (any case): what
/// was wrong.
fn check_says(line: &str, words: &[&str]) {
    let l = line.to_lowercase();
    for w in words {
        if !l.contains(&w.to_lowercase()) {
            panic!("log line does not say what was wrong ({w:?}): {line}");
        }
    }
}

#[test]
fn http_request_on_fastcgi_socket_is_logged_and_connection_closed() {
    bad_input(false, |c| {
        let _ = c.try_send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    });
}

#[test]
fn lying_content_length_is_logged_and_connection_closed() {
    bad_input(false, |c| {
        c.begin_responder(1);
        // A PARAMS header announcing 1000 bytes, then only 10, then EOF.
        let mut b = fcgi::header(1, fcgi::PARAMS, 1, 1000, 0).to_vec();
        b.extend_from_slice(&fcgi::nv_pair(b"NAME", b"VALUE"));
        let _ = c.try_send_raw(&b);
        let _ = c.stream().shutdown(Shutdown::Write);
    });
}

#[test]
fn connection_closed_mid_header_is_logged_and_closed() {
    bad_input(false, |c| {
        c.begin_responder(1);
        let h = fcgi::header(1, fcgi::PARAMS, 1, 20, 0);
        let _ = c.try_send_raw(&h[..5]);
        let _ = c.stream().shutdown(Shutdown::Write);
    });
}

#[test]
fn client_vanishing_mid_record_is_logged() {
    bad_input(true, |c| {
        c.begin_responder(1);
        let mut b = fcgi::header(1, fcgi::PARAMS, 1, 500, 0).to_vec();
        b.extend_from_slice(&[b'x'; 100]);
        let _ = c.try_send_raw(&b);
        // Dropped by the caller: full close mid-record.
    });
}

/// A request whose PARAMS stream holds `encoded` (a bad pair).
fn send_bad_params(c: &mut Conn, encoded: &[u8]) {
    c.begin_responder(1);
    let _ = c.try_send_raw(&fcgi::record(fcgi::PARAMS, 1, encoded, 0));
    let _ = c.try_send_raw(&fcgi::record(fcgi::PARAMS, 1, &[], 0));
    let _ = c.try_send_raw(&fcgi::record(fcgi::STDIN, 1, &[], 0));
}

#[test]
fn param_value_length_of_2_pow_31_is_rejected() {
    let line = bad_input(false, |c| {
        // name length 4, value length 0xFFFFFFFF (2^31-1), few bytes.
        let mut e = vec![4, 0xff, 0xff, 0xff, 0xff];
        e.extend_from_slice(b"NAMEvalue");
        send_bad_params(c, &e);
    });
    check_says(&line, &["2147483647"]);
}

#[test]
fn param_name_length_of_2_pow_31_is_rejected() {
    let line = bad_input(false, |c| {
        let mut e = vec![0xff, 0xff, 0xff, 0xff, 5];
        e.extend_from_slice(b"NAMEvalue");
        send_bad_params(c, &e);
    });
    check_says(&line, &["2147483647"]);
}

/// A request on `c` whose PARAMS stream is `encoded`, in records as large
/// as they go.
fn send_params_stream(c: &mut Conn, encoded: &[u8]) {
    c.begin_responder(1);
    let mut b = fcgi::stream(fcgi::PARAMS, 1, encoded, 65535, Padding::None);
    b.extend(fcgi::record(fcgi::STDIN, 1, &[], 0));
    let _ = c.try_send_raw(&b);
}

/// A limit the man page states (Limits): the largest head, `largest`, is
/// served; `over`, one byte or pair more, closes the connection with a
/// log line that `says` which limit.
fn check_params_limit(largest: &[u8], over: &[u8], says: &[&str]) {
    let srv = Server::tcp(&["--builtin", "hello"]);
    let mut c = srv.connect();
    send_params_stream(&mut c, largest);
    let r = c.read_response(1);
    check_hello(&c, &r);
    let line = bad_input_on(&srv, false, |c| send_params_stream(c, over));
    check_says(&line, says);
}

#[test]
fn params_are_limited_to_4096_pairs() {
    let pairs = |n: usize| {
        let p: Vec<(String, String)> =
            (0..n).map(|i| (format!("P{i}"), String::new())).collect();
        fcgi::nv_pairs(&p)
    };
    check_params_limit(&pairs(4096), &pairs(4097), &["4096 params"]);
}

#[test]
fn params_are_limited_to_1_mib() {
    // One pair ("N", 1-byte and 4-byte lengths) making `len` bytes.
    let sized = |len: usize| fcgi::nv_pair(b"N", &vec![b'v'; len - 6]);
    check_params_limit(
        &sized(1 << 20),
        &sized((1 << 20) + 1),
        &["limit of 1048576 bytes"],
    );
}

#[test]
fn param_names_are_limited_to_8_kib() {
    let named = |len: usize| fcgi::nv_pair(&vec![b'N'; len], b"v");
    check_params_limit(
        &named(8 << 10),
        &named((8 << 10) + 1),
        &["8193-byte name"],
    );
}

#[test]
fn garbage_after_valid_record_is_logged_and_connection_closed() {
    bad_input(false, |c| {
        c.begin_responder(1);
        let _ = c.try_send_raw(&[0xff; 32]);
    });
}

/// FastCGI 1.0 §3.3: while a request id is inactive, the application
/// ignores records with that id (other than BEGIN_REQUEST).  So STDIN
/// before BEGIN_REQUEST is dropped and the connection stays usable.
#[test]
fn stdin_before_begin_request_is_ignored() {
    let srv = Server::tcp(&["--builtin", "echo"]);
    let mut c = srv.connect();
    c.send_record(fcgi::STDIN, 1, b"stray body");
    c.send_record(fcgi::STDIN, 1, &[]);
    c.send_record(fcgi::PARAMS, 5, &fcgi::nv_pairs(&[("A", "1")]));
    // The same id then starts a real request; the stray bytes are not
    // part of its body.
    check_echo(&mut c, 1, b"the real body");
    let stray = c.take_stash();
    if !stray.is_empty() {
        c.fail(&format!("unexpected records: {stray:?}"));
    }
    srv.assert_no_panic();
}

#[test]
fn slow_clients_are_cut_off_and_others_served_meanwhile() {
    // 30 clients trickle one byte every 100 ms.  With 2 workers, a
    // server that let them hold workers until the 2 s timeout would
    // take ~30 s to get to a client arriving after them; one that does
    // not is immediate.  The fast client's read limit is 10 s.
    const SLOW: usize = 30;
    let srv =
        Server::tcp(&["--builtin", "hello", "-w", "2", "--io-timeout", "2"]);
    let mut trickle = fcgi::begin_request(1, fcgi::RESPONDER, 0);
    let pairs: Vec<(String, String)> = (0..200)
        .map(|i| (format!("SLOW_PARAM_{i}"), format!("value-{i}")))
        .collect();
    trickle.extend_from_slice(&fcgi::stream(
        fcgi::PARAMS,
        1,
        &fcgi::nv_pairs(&pairs),
        65535,
        Padding::None,
    ));

    let start = Instant::now();
    let mut slow: Vec<(Conn, String, Option<Duration>)> = (0..SLOW)
        .map(|_| {
            let c = srv.connect();
            c.stream().set_nonblocking(true).unwrap();
            let peer = c.peer_name();
            (c, peer, None)
        })
        .collect();

    let mut fast = srv.connect();
    fast.set_read_timeout(Duration::from_secs(10));
    let fast_thread = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let r = fast.request(1, &[], b"");
        check_hello(&fast, &r);
        t.elapsed()
    });

    let limit = Duration::from_secs(20);
    let mut pos = 0;
    while slow.iter().any(|s| s.2.is_none()) && start.elapsed() < limit {
        for (c, _, closed) in slow.iter_mut().filter(|s| s.2.is_none()) {
            let mut buf = [0u8; 512];
            let gone = loop {
                match std::io::Read::read(c.stream_mut(), &mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e) if crate::util::is_timeout(&e) => break false,
                    Err(_) => break true,
                }
            };
            let gone = gone
                || (pos < trickle.len()
                    && std::io::Write::write(
                        c.stream_mut(),
                        &trickle[pos..pos + 1],
                    )
                    .is_err_and(|e| !crate::util::is_timeout(&e)));
            if gone {
                *closed = Some(start.elapsed());
            }
        }
        pos += 1;
        thread::sleep(Duration::from_millis(100));
    }
    let fast_result = fast_thread.join().map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    });
    let still_open = slow.iter().filter(|s| s.2.is_none()).count();
    let mut problems = Vec::new();
    if still_open > 0 {
        problems.push(format!(
            "{still_open} of {SLOW} slow clients still connected after \
             {limit:?} with --io-timeout 2"
        ));
    }
    if let Err(msg) = &fast_result {
        problems.push(format!(
            "the fast client was not served while slow ones were \
             connected: {msg}"
        ));
    }
    if !problems.is_empty() {
        srv.fail(&problems.join("\n"));
    }
    for (_, peer, _) in &slow {
        srv.expect_log_line(LOG_TIMEOUT, &[peer]);
    }
    let r = srv.connect().request(1, &[], b"");
    assert_eq!(r.stdout, HELLO, "{}", srv.dump());
    srv.assert_running();
    srv.assert_no_panic();
}

/// A connection that has sent BEGIN_REQUEST and part of its PARAMS, and
/// sends nothing more.
fn half_sent_head(srv: &Server) -> Conn {
    let mut c = srv.connect();
    c.begin_responder(1);
    c.send_record(fcgi::PARAMS, 1, &fcgi::nv_pairs(&[("A", "1")]));
    c
}

/// Sends the head of request 1, an `echo` POST of `body`.
fn begin_echo_post(c: &mut Conn, body: &[u8]) {
    let len = body.len().to_string();
    c.begin_responder(1);
    c.params(
        1,
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", len.as_str())],
    );
}

/// Sends `body` from byte `from` on, a byte every 300 ms, ends STDIN, and
/// checks that request 1 echoes the whole body.
fn trickle_echo(c: &mut Conn, body: &[u8], from: usize) {
    for b in body[from..].chunks(1) {
        thread::sleep(Duration::from_millis(300));
        c.send_record(fcgi::STDIN, 1, b);
    }
    c.send_record(fcgi::STDIN, 1, b"");
    let r = c.read_response(1);
    if let Some(d) = compare_bytes(&r.stdout, &echo_expected(body, true)) {
        c.fail(&format!("echo of a body sent a byte at a time: {d}"));
    }
}

/// A connection whose request head stalls is closed after --io-timeout
/// even while the only worker is busy with a slow request: the check
/// does not wait for a worker to be free. A server that checked only
/// between requests would close it after the slow one, 6 s in.
#[test]
fn a_stalled_head_is_closed_while_every_worker_is_busy() {
    let srv =
        Server::unix(&["--builtin", "echo", "-w", "1", "--io-timeout", "1"]);
    let mut stalled = half_sent_head(&srv);
    let start = Instant::now();
    thread::sleep(Duration::from_millis(500));
    // The worker then serves a body that trickles in for 6 s: a byte
    // every 300 ms, each well within the I/O timeout.
    let mut slow = srv.connect();
    let slow_thread = thread::spawn(move || {
        let body = b"twenty bytes of body";
        begin_echo_post(&mut slow, body);
        trickle_echo(&mut slow, body, 0);
    });
    let rest = stalled.expect_closed(Duration::from_secs(10));
    let closed_after = start.elapsed();
    slow_thread.join().expect("the slow request was served");
    if !rest.is_empty() {
        stalled
            .fail(&format!("answer to a stalled head: {}", show(&rest, 300)));
    }
    if closed_after > Duration::from_millis(3500) {
        srv.fail(&format!(
            "the stalled head was closed {closed_after:?} after it began, \
             with --io-timeout 1; the busy worker's request took 6 s"
        ));
    }
    srv.expect_log_line(LOG_TIMEOUT, &["no complete request head"]);
    srv.assert_no_panic();
}

/// On SIGTERM a connection halfway through its request head is closed at
/// once, as an idle kept one is: no worker will serve it any more. A
/// request in flight meanwhile finishes within the grace period.
#[test]
fn stopping_closes_a_half_sent_head_at_once() {
    let srv = Server::unix(&["--builtin", "echo", "-w", "2"]);
    let mut stalled = half_sent_head(&srv);
    thread::sleep(Duration::from_millis(500));
    // A request whose body trickles in for 3 s keeps the server in its
    // grace period.
    let mut slow = srv.connect();
    let body = b"ten bytes.";
    begin_echo_post(&mut slow, body);
    slow.send_record(fcgi::STDIN, 1, &body[..1]);
    thread::sleep(Duration::from_millis(300));
    srv.signal("TERM");
    let signalled = Instant::now();
    let slow_thread = thread::spawn(move || trickle_echo(&mut slow, body, 1));
    let rest = stalled.expect_closed(Duration::from_secs(10));
    let closed_after = signalled.elapsed();
    slow_thread
        .join()
        .expect("the request in flight was served");
    if !rest.is_empty() {
        stalled.fail(&format!(
            "answer to a half-sent head: {}",
            show(&rest, 300)
        ));
    }
    if closed_after > Duration::from_millis(1500) {
        srv.fail(&format!(
            "the half-sent head was closed {closed_after:?} after SIGTERM; \
             the request in flight took 3 s more"
        ));
    }
    let status = srv.expect_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}\n{}", srv.dump());
}

/// Connections that never send a byte are closed after --io-timeout,
/// so they cannot use up --max-conns for good.
#[test]
fn silent_connections_are_closed_after_the_io_timeout() {
    let srv = Server::unix(&[
        "--builtin",
        "hello",
        "--max-conns",
        "5",
        "--io-timeout",
        "1",
    ]);
    let silent: Vec<_> = (0..5).map(|_| srv.connect()).collect();
    thread::sleep(Duration::from_secs(3));
    let r = srv.connect().request(1, &[], b"");
    if r.stdout.is_empty() {
        srv.fail("no answer while silent connections held every slot");
    }
    drop(silent);
}
