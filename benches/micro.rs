//! Micro-benchmarks of the sans-IO core: frame header parsing, unmasking,
//! UTF-8 validation, handshake parsing and accept key, frame encoding, and
//! decoding whole messages in place, and inflating compressed ones. Run
//! with `cargo bench --bench micro`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wsloop::proto::deflate::Deflater;
use wsloop::proto::frame::{
    EncodedHeader, OpCode, encode_frame, encode_masked_frame, parse_header,
};
use wsloop::proto::handshake::{HeadScanner, accept_key, parse_request, validate_upgrade};
use wsloop::proto::mask::apply_mask;
use wsloop::proto::utf8::Utf8Validator;
use wsloop::proto::{Decoded, Decoder, Limits};

const SIZES: [usize; 6] = [16, 128, 1024, 16 * 1024, 256 * 1024, 1024 * 1024];
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn frame_header(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_header_parse");
    for (name, len) in [("7-bit", 20usize), ("16-bit", 1024), ("64-bit", 1 << 20)] {
        let mut frame = Vec::new();
        encode_masked_frame(&mut frame, 0x82, KEY, &vec![0u8; len]);
        frame.truncate(14);
        group.bench_function(name, |b| b.iter(|| parse_header(black_box(&frame), 0)));
    }
    group.finish();
}

fn unmask(c: &mut Criterion) {
    // From an aligned buffer, and where a payload really lies: after a
    // 14-byte client header (64-bit length and key), on no word boundary.
    unmask_from::<0>(c, "unmask");
    unmask_from::<14>(c, "unmask_after_header");
}

/// One unmask group, the payload `START` bytes into its buffer. (A
/// constant: with the start a run-time value shared by both groups, the
/// benchmark's own code measured the aligned 16 KiB case a third slower.)
fn unmask_from<const START: usize>(c: &mut Criterion, name: &str) {
    let mut group = c.benchmark_group(name);
    for size in [16, 128, 1024, 4096, 16 * 1024, 256 * 1024, 1024 * 1024] {
        let mut buffer = vec![0xA5u8; START + size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buffer[START..]), KEY, 0));
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8_validate");
    let sample = "Hello, wsloop! κόσμε ✓ 日本語 ".repeat(1 << 15);
    for size in SIZES {
        let mut end = size.min(sample.len());
        while !sample.is_char_boundary(end) {
            end -= 1;
        }
        let text = &sample.as_bytes()[..end];
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("whole", size), &text, |b, text| {
            b.iter(|| std::str::from_utf8(black_box(text)).is_ok());
        });
        group.bench_with_input(
            BenchmarkId::new("incremental_4k_pieces", size),
            &text,
            |b, text| {
                b.iter(|| {
                    let mut validator = Utf8Validator::default();
                    for piece in text.chunks(4096) {
                        validator.feed(black_box(piece)).unwrap();
                    }
                    validator.finish().unwrap();
                });
            },
        );
    }
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let request: &[u8] = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8081\r\nConnection: Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nUpgrade: websocket\r\nOrigin: http://127.0.0.1:8081\r\nSec-WebSocket-Version: 13\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36\r\nAccept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9\r\nSec-WebSocket-Key: zDZ/E2myeYgoGbO1hLHQWw==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Bytes(request.len() as u64));
    group.bench_function("scan_parse_validate", |b| {
        b.iter(|| {
            let mut scanner = HeadScanner::default();
            let end = scanner.find_end(black_box(request), 8192).unwrap().unwrap();
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let parsed = parse_request(&request[..end], &mut slots).unwrap();
            validate_upgrade(&parsed).unwrap()
        });
    });
    group.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box(b"zDZ/E2myeYgoGbO1hLHQWw==")))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_encode");
    for size in [20usize, 1024, 16 * 1024, 256 * 1024] {
        let payload = vec![7u8; size];
        let mut out = Vec::with_capacity(size + 16);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                out.clear();
                encode_frame(&mut out, true, OpCode::Binary, black_box(&payload));
            });
        });
    }
    group.bench_function("header_only", |b| {
        b.iter(|| EncodedHeader::new(true, 0, OpCode::Text, black_box(1000)))
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_in_place");
    for size in [20usize, 1024, 16 * 1024, 256 * 1024] {
        let mut wire = Vec::new();
        for _ in 0..16 {
            encode_masked_frame(&mut wire, 0x81, KEY, "a".repeat(size).as_bytes());
        }
        let mut work = wire.clone();
        let mut decoder = Decoder::new(&Limits::default());
        group.throughput(Throughput::Bytes((16 * size) as u64));
        group.bench_with_input(BenchmarkId::new("16_text_messages", size), &size, |b, _| {
            b.iter(|| {
                // Decoding unmasks in place, so start from the masked bytes.
                work.copy_from_slice(&wire);
                let mut pos = 0;
                while let Ok(Decoded::Frame(frame, used)) = decoder.decode(&mut work[pos..]) {
                    black_box(frame);
                    pos += used;
                }
            });
        });
    }
    group.finish();
}

/// Compressed text messages decoded whole, every slice of their inflation
/// included: JSON as the notebook sends it, and 15 MiB of one letter in
/// 15 KB (the worst ratio DEFLATE allows, so zlib runs at memory speed and
/// any overhead around it shows).
fn decode_compressed(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_compressed");
    let json: String = (0..20_000)
        .map(|i| format!(r#"{{"op":"PARAGRAPH","data":{{"id":"p{i}","status":"FINISHED"}}}},"#))
        .collect();
    let mut bomb = String::from(r#"{"data":""#);
    bomb.push_str(&"a".repeat(15 << 20));
    bomb.push_str(r#""}"#);
    for (name, text, level) in [("json_1mib", &json, 1), ("one_letter_15mib", &bomb, 9)] {
        let mut compressed = Vec::new();
        let mut compressor = Deflater::with_level(15, level);
        assert!(compressor.compress_message(text.as_bytes(), &mut compressed, true));
        let mut wire = Vec::new();
        encode_masked_frame(&mut wire, 0xC1, KEY, &compressed);
        let mut work = wire.clone();
        let mut decoder = Decoder::new(&Limits::default());
        decoder.enable_inflate(15, true);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                work.copy_from_slice(&wire);
                let mut pos = 0;
                loop {
                    match decoder.decode(&mut work[pos..]) {
                        Ok(Decoded::Frame(frame, _)) => {
                            black_box(frame);
                            break;
                        }
                        Ok(Decoded::Inflating(used)) => pos += used,
                        other => panic!("{other:?}"),
                    }
                }
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    frame_header,
    unmask,
    utf8,
    handshake,
    encode,
    decode,
    decode_compressed
);
criterion_main!(benches);
