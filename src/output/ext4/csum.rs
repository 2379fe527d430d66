//! Checksums and hashes ext4 uses: crc32c in the kernel's raw form (no final
//! inversion), the half-MD4 directory hash, and the extended-attribute hashes.

/// The kernel's `ext4_chksum(seed, data)`: crc32c continued from `seed`, without the
/// final inversion the standard CRC-32C applies.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// Checksum seed of a file system: crc32c(~0, uuid).
pub fn fs_seed(uuid: &[u8; 16]) -> u32 {
    crc32c_raw(!0, uuid)
}

/// Per-inode seed: crc32c(fs seed, inode number, generation).
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    let s = crc32c_raw(fs_seed, &ino.to_le_bytes());
    crc32c_raw(s, &generation.to_le_bytes())
}

fn str2hashbuf_unsigned(msg: &[u8], buf: &mut [u32; 8]) {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let msg = &msg[..msg.len().min(32)];
    let mut out = 0;
    let mut chunks = msg.chunks_exact(4);
    for c in chunks.by_ref() {
        buf[out] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        out += 1;
    }
    let rest = chunks.remainder();
    let mut val = pad;
    for &b in rest {
        val = (b as u32).wrapping_add(val << 8);
    }
    if out < 8 {
        buf[out] = val;
        out += 1;
    }
    while out < 8 {
        buf[out] = pad;
        out += 1;
    }
}

fn half_md4_transform(buf: &mut [u32; 4], input: &[u32; 8]) {
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    let (mut a, mut b, mut c, mut d) = (buf[0], buf[1], buf[2], buf[3]);
    macro_rules! round {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a.wrapping_add($f($b, $c, $d)).wrapping_add($x);
            $a = $a.rotate_left($s);
        };
    }
    let i = input;
    round!(f, a, b, c, d, i[0], 3);
    round!(f, d, a, b, c, i[1], 7);
    round!(f, c, d, a, b, i[2], 11);
    round!(f, b, c, d, a, i[3], 19);
    round!(f, a, b, c, d, i[4], 3);
    round!(f, d, a, b, c, i[5], 7);
    round!(f, c, d, a, b, i[6], 11);
    round!(f, b, c, d, a, i[7], 19);

    round!(g, a, b, c, d, i[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, i[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, i[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, i[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, i[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, i[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, i[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, i[6].wrapping_add(K2), 13);

    round!(h, a, b, c, d, i[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, i[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, i[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, i[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, i[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, i[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, i[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, i[4].wrapping_add(K3), 15);

    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// The htree hash of a name (half-MD4, unsigned characters): (major, minor).
pub fn dx_hash(name: &[u8], seed: &[u32; 4]) -> (u32, u32) {
    let mut buf = if seed.iter().any(|&s| s != 0) {
        *seed
    } else {
        [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476]
    };
    let mut p = name;
    let mut input = [0u32; 8];
    loop {
        str2hashbuf_unsigned(p, &mut input);
        half_md4_transform(&mut buf, &input);
        if p.len() <= 32 {
            break;
        }
        p = &p[32..];
    }
    let mut hash = buf[1] & !1;
    if hash == 0x7fff_ffff << 1 {
        hash = (0x7fff_ffff - 1) << 1;
    }
    (hash, buf[2])
}

/// Hash of one extended attribute entry (name, then the value as padded le32 words).
pub fn xattr_entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut hash: u32 = 0;
    for &c in name {
        hash = (hash << 5) ^ (hash >> 27) ^ c as u32;
    }
    let mut padded = value.to_vec();
    padded.resize(value.len().div_ceil(4) * 4, 0);
    for w in padded.chunks_exact(4) {
        hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    }
    hash
}

/// Hash of an xattr block from its entries' hashes.
pub fn xattr_block_hash(entry_hashes: &[u32]) -> u32 {
    let mut hash: u32 = 0;
    for &h in entry_hashes {
        if h == 0 {
            return 0;
        }
        hash = (hash << 16) ^ (hash >> 16) ^ h;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_crc_is_the_kernel_form() {
        // crc32c("123456789") = 0xe3069283 standard; the raw form skips the final inversion.
        assert_eq!(crc32c_raw(!0, b"123456789"), !0xe306_9283);
        // Continuing a raw crc equals one pass.
        assert_eq!(
            crc32c_raw(crc32c_raw(!0, b"1234"), b"56789"),
            crc32c_raw(!0, b"123456789")
        );
    }

    /// Against debugfs, which computes the same hash in e2fsprogs' own code.
    #[test]
    fn dx_hash_matches_debugfs() {
        let seed_uuid = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";
        let u = uuid::Uuid::parse_str(seed_uuid).unwrap();
        let b = u.as_bytes();
        let seed = [0, 4, 8, 12].map(|i| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
        for name in [
            "a",
            "hello",
            "x86_64-linux-gnu",
            "a-name-longer-than-thirty-two-bytes-for-two-rounds",
            "é",
        ] {
            let out = std::process::Command::new("debugfs")
                .args(["-R", &format!("dx_hash -h 4 -s {seed_uuid} {name}")])
                .output();
            let Ok(out) = out else { return };
            let text = String::from_utf8_lossy(&out.stdout);
            let Some(line) = text.lines().find(|l| l.contains("Hash of")) else {
                eprintln!(
                    "skipping: debugfs output {text:?} {:?}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return;
            };
            // "Hash of a is 0x1234 (minor 0x5678)"
            let words: Vec<&str> = line.split_whitespace().collect();
            let major = u32::from_str_radix(words[4].trim_start_matches("0x"), 16).unwrap();
            let minor =
                u32::from_str_radix(words[6].trim_start_matches("0x").trim_end_matches(')'), 16)
                    .unwrap();
            assert_eq!(dx_hash(name.as_bytes(), &seed), (major, minor), "{name}");
        }
    }
}
