//! Randomized tests of the shim protocol framing, which berthd and every shim read from each
//! other's socket: random and mutated frames must give an error, never a panic, and a length
//! prefix past the limit must be refused before anything is allocated. A bounded number of
//! cases from a fixed seed (`BERTH_FUZZ_SEED`, `BERTH_FUZZ_CASES`), on stable.

use proto::shim::{
    ExecReport, FrameError, MAX_FRAME_LEN, ShimRequest, ShimResponse, ShimSpec, read_frame,
    write_frame,
};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

fn rng(test: &str) -> StdRng {
    let seed = std::env::var("BERTH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b0e7_u64);
    eprintln!("{test}: seed {seed} (set BERTH_FUZZ_SEED to replay another)");
    StdRng::seed_from_u64(seed ^ test.len() as u64)
}

fn cases(default: usize) -> usize {
    std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let mut v = vec![0u8; rng.random_range(0..=max)];
    rng.fill_bytes(&mut v);
    v
}

/// A random body behind a length prefix that is right, short or anything.
fn random_frame(rng: &mut StdRng) -> Vec<u8> {
    let body = random_bytes(rng, 256);
    let len = match rng.random_range(0..3) {
        0 => body.len() as u32,
        1 => rng.random_range(0..=body.len() as u32),
        _ => rng.random(),
    };
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

#[test]
fn random_frames_never_panic() {
    let mut rng = rng("random_frames");
    for _ in 0..cases(20_000) {
        let frame = random_frame(&mut rng);
        let _ = read_frame::<ShimRequest, _>(&mut frame.as_slice());
        let _ = read_frame::<ShimResponse, _>(&mut frame.as_slice());
        let _ = read_frame::<ExecReport, _>(&mut frame.as_slice());
        let _ = read_frame::<ShimSpec, _>(&mut frame.as_slice());
    }
}

#[test]
fn mutated_valid_frames_never_panic() {
    let mut rng = rng("mutated_frames");
    for _ in 0..cases(20_000) {
        let spec = ShimSpec {
            pod_id: format!("pod{}", rng.random::<u32>()),
            hostname: "h".repeat(rng.random_range(0..64)),
            ..Default::default()
        };
        let mut frame = Vec::new();
        write_frame(&mut frame, &spec).expect("write");
        assert_eq!(
            read_frame::<ShimSpec, _>(&mut frame.as_slice()).expect("round trip"),
            spec
        );
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..frame.len());
            frame[i] ^= 1 << rng.random_range(0..8);
        }
        let _ = read_frame::<ShimSpec, _>(&mut frame.as_slice());
        let _ = read_frame::<ShimRequest, _>(&mut frame.as_slice());
    }
}

#[test]
fn oversized_length_prefix_is_refused_without_reading_the_body() {
    for len in [MAX_FRAME_LEN + 1, u32::MAX] {
        let frame = len.to_be_bytes();
        match read_frame::<ShimRequest, _>(&mut frame.as_slice()) {
            Err(FrameError::TooLarge { .. }) => {}
            other => panic!("length {len}: {other:?}"),
        }
    }
}
