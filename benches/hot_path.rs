//! Criterion benchmarks of the per-request work that does no I/O: parsing a pipeline of
//! requests, hashing keys to slots, and the whole routing decision (lookup, keys, slot).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use slotgate::command::{self, KeyPositions, Table};
use slotgate::protocol::{Limits, ReplyScanner, Request, RequestParser};
use slotgate::router::key_slot;

fn pipeline(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let key = format!("key:{i:08}");
        v.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$64\r\n", key.len()).as_bytes(),
        );
        v.extend_from_slice(&[b'x'; 64]);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn parse(c: &mut Criterion) {
    let wire = pipeline(1000);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("set_pipeline_1000", |b| {
        b.iter(|| {
            let mut p = RequestParser::new(Limits::default());
            let mut buf = BytesMut::from(&wire[..]);
            let mut n = 0;
            while let Ok(Some(r)) = p.parse(&mut buf) {
                n += r.argc();
            }
            black_box(n)
        })
    });
    // What a session does: whole requests split off the buffer together, 256 at a time.
    g.bench_function("set_pipeline_1000_batched", |b| {
        b.iter(|| {
            let mut p = RequestParser::new(Limits::default());
            let mut buf = BytesMut::from(&wire[..]);
            let mut out = Vec::with_capacity(256);
            let mut n = 0;
            loop {
                out.clear();
                if p.parse_many(&mut buf, &mut out, 256).is_err() || out.is_empty() {
                    break;
                }
                n += out.iter().map(Request::argc).sum::<usize>();
            }
            black_box(n)
        })
    });
    let replies: Vec<u8> = b"$64\r\n"
        .iter()
        .chain([b'v'; 64].iter())
        .chain(b"\r\n")
        .copied()
        .collect::<Vec<u8>>()
        .repeat(1000);
    g.bench_function("scan_bulk_replies_1000", |b| {
        b.iter(|| {
            let mut s = ReplyScanner::new(Limits::default());
            let mut off = 0;
            while let Ok(Some(n)) = s.scan(replies.get(off..).unwrap_or_default()) {
                off += n;
            }
            black_box(off)
        })
    });
    g.finish();
}

fn slot(c: &mut Criterion) {
    c.bench_function("key_slot_16b", |b| {
        b.iter(|| key_slot(black_box(b"key:000012345678")))
    });
    c.bench_function("key_slot_tagged", |b| {
        b.iter(|| key_slot(black_box(b"{user1000}.following")))
    });
}

fn route(c: &mut Criterion) {
    let table = Table::redis70();
    let get = Request::from_args(&["GET", "key:000012345678"]);
    let mset = Request::from_args(&["MSET", "a", "1", "b", "2", "c", "3"]);
    c.bench_function("route_get", |b| {
        b.iter(|| {
            let e = command::lookup(&table, black_box(&get)).ok();
            let mut keys = KeyPositions::new();
            if let Some(e) = e {
                command::key_positions(e.spec, &get, &mut keys);
            }
            black_box(command::common_slot(&get, &keys).ok())
        })
    });
    c.bench_function("route_mset_3_keys", |b| {
        b.iter(|| {
            let e = command::lookup(&table, black_box(&mset)).ok();
            let mut keys = KeyPositions::new();
            if let Some(e) = e {
                command::key_positions(e.spec, &mset, &mut keys);
            }
            let mut slots = command::KeySlots::new();
            let _ = command::key_slots(&mset, &keys, &mut slots);
            black_box(command::multi::split(&mset, &keys, &slots, 2).map_or(0, |p| p.len()))
        })
    });
}

criterion_group!(benches, parse, slot, route);
criterion_main!(benches);
