//! A plain SHA-256 pass over a file, with the `sha2` crate the service
//! hashes uploads with: the hash's part of the upload CPU floor
//! (bench/streaming.sh). Reads in 1 MiB blocks and prints the digest in
//! hex; time it from outside (`/usr/bin/time`).
//!
//! `cargo bench --bench sha256_pass -- FILE`

use std::io::Read;

use sha2::{Digest, Sha256};

fn main() {
    // The last argument (`cargo bench` adds `--bench` before it).
    let path = std::env::args()
        .skip(1)
        .last()
        .expect("usage: sha256_pass FILE");
    let mut file = std::fs::File::open(&path).expect("cannot open the file");
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut block).expect("cannot read the file");
        if read == 0 {
            break;
        }
        hasher.update(&block[..read]);
    }
    println!("{}", hex::encode(hasher.finalize()));
}
