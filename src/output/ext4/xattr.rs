//! Extended attributes: in the inode when they fit, else in one attribute block.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::csum::{crc32c_raw, xattr_block_hash, xattr_entry_hash};
use super::{put16, put32, BLOCK, EXTRA_ISIZE, INODE_SIZE};

const MAGIC: u32 = 0xEA02_0000;
/// Room after the inode's extra fields: magic + entries + values.
pub const INLINE_SPACE: usize = INODE_SIZE - 0x80 - EXTRA_ISIZE as usize;

/// Prefix index and the rest of the name, as ext4 stores names.
pub fn split_name(name: &str) -> Result<(u8, &str)> {
    const PREFIXES: [(&str, u8); 5] = [
        ("user.", 1),
        ("trusted.", 4),
        ("security.", 6),
        ("system.", 7),
        ("", 0),
    ];
    if name == "system.posix_acl_access" {
        return Ok((2, ""));
    }
    if name == "system.posix_acl_default" {
        return Ok((3, ""));
    }
    for (p, i) in PREFIXES {
        if let Some(rest) = name.strip_prefix(p) {
            if i == 0 {
                bail!("xattr `{name}`: unknown namespace (user., trusted., security. or system.)");
            }
            if rest.is_empty() || rest.len() > 255 {
                bail!("xattr `{name}`: bad name length");
            }
            return Ok((i, rest));
        }
    }
    bail!("xattr `{name}`: unknown namespace")
}

struct Item<'a> {
    index: u8,
    name: &'a [u8],
    value: &'a [u8],
}

fn items(xattrs: &BTreeMap<String, Vec<u8>>) -> Result<Vec<Item<'_>>> {
    let mut v = Vec::new();
    for (k, val) in xattrs {
        let (index, name) = split_name(k)?;
        v.push(Item {
            index,
            name: name.as_bytes(),
            value: val,
        });
    }
    // The kernel looks attributes up in (index, name length, name) order.
    v.sort_by(|a, b| (a.index, a.name.len(), a.name).cmp(&(b.index, b.name.len(), b.name)));
    Ok(v)
}

fn entry_len(name_len: usize) -> usize {
    (16 + name_len + 3) & !3
}

fn value_len(n: usize) -> usize {
    (n + 3) & !3
}

/// Lays entries and values into `area`; value offsets are relative to `base`
/// (the first entry in an inode, the block start in a block). None if they do not fit.
fn lay_out(
    items: &[Item],
    area: &mut [u8],
    entries_at: usize,
    base: usize,
    with_hash: bool,
) -> Option<Vec<u32>> {
    let mut e = entries_at;
    let mut v = area.len();
    let mut hashes = Vec::new();
    for it in items {
        let el = entry_len(it.name.len());
        let vl = value_len(it.value.len());
        if e + el + 4 > v.checked_sub(vl)? {
            return None;
        }
        v -= vl;
        area[v..v + it.value.len()].copy_from_slice(it.value);
        area[e] = it.name.len() as u8;
        area[e + 1] = it.index;
        put16(area, e + 2, (v - base) as u16);
        put32(area, e + 4, 0);
        put32(area, e + 8, it.value.len() as u32);
        let h = if with_hash {
            xattr_entry_hash(it.name, it.value)
        } else {
            0
        };
        put32(area, e + 12, h);
        area[e + 16..e + 16 + it.name.len()].copy_from_slice(it.name);
        hashes.push(h);
        e += el;
    }
    // Four zero bytes end the entry list; `area` is zero-filled already.
    Some(hashes)
}

/// The in-inode attribute area, or None when the attributes need a block.
pub fn inline_area(xattrs: &BTreeMap<String, Vec<u8>>) -> Result<Option<Vec<u8>>> {
    let items = items(xattrs)?;
    let mut area = vec![0u8; INLINE_SPACE];
    put32(&mut area, 0, MAGIC);
    Ok(lay_out(&items, &mut area, 4, 4, false).map(|_| area))
}

/// An attribute block at block number `block_nr`.
pub fn block(xattrs: &BTreeMap<String, Vec<u8>>, block_nr: u64, fs_seed: u32) -> Result<Vec<u8>> {
    let items = items(xattrs)?;
    let mut b = vec![0u8; BLOCK as usize];
    put32(&mut b, 0, MAGIC);
    put32(&mut b, 4, 1);
    put32(&mut b, 8, 1);
    let Some(hashes) = lay_out(&items, &mut b, 32, 0, true) else {
        bail!(
            "extended attributes larger than one block ({} bytes) are not supported",
            BLOCK
        );
    };
    put32(&mut b, 12, xattr_block_hash(&hashes));
    let c = crc32c_raw(fs_seed, &block_nr.to_le_bytes());
    let c = crc32c_raw(c, &b);
    put32(&mut b, 16, c);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_fit_in_the_inode() {
        let mut x = BTreeMap::new();
        x.insert("security.capability".to_string(), vec![1u8; 20]);
        let a = inline_area(&x).unwrap().unwrap();
        assert_eq!(a.len(), INLINE_SPACE);
        assert_eq!(a[4], 10, "name length of \"capability\"");
        assert_eq!(a[5], 6, "security index");
        let mut big = BTreeMap::new();
        big.insert("user.big".to_string(), vec![7u8; 200]);
        assert!(inline_area(&big).unwrap().is_none());
        let b = block(&big, 1234, 99).unwrap();
        assert_eq!(&b[..4], &MAGIC.to_le_bytes());
    }
}
