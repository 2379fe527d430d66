//! GPT disk images: a protective MBR, primary and backup headers, partitions aligned to
//! 1 MiB and typed by the Discoverable Partitions Specification, each file system written
//! in place at its offset in one sparse file. GUIDs derive from the image name, so the
//! same profile always gives the same `root=PARTUUID=…`.

use std::collections::BTreeMap;
use std::fs::File;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::ext4::writer::{Prepared, Target};
use super::ext4::{Ext4Options, SizeSpec};
use crate::tree::Tree;

pub const ROOT_X86_64: Uuid = Uuid::from_u128(0x4f68bce3_e8cd_4db1_96e7_fbcaf984b709);
pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1 << 20;

/// Partition type GUIDs by Discoverable Partitions Specification name, or a GUID as given.
pub fn partition_type(name: &str) -> Result<Uuid, String> {
    let s = match name {
        "root" | "root-x86-64" => "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        "esp" => "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
        "linux-generic" => "0fc63daf-8483-4772-8e79-3d69d8477de4",
        "var" => "4d21b016-b534-45c2-a9fb-5c16e091fd2d",
        "tmp" => "7ec6f557-3bc5-4aca-b293-16ef5df639d1",
        "home" => "933ac7e1-2eb4-4f13-b844-0e14e2aef915",
        "srv" => "3b8f8425-20e0-4f3b-907f-1a25a76f98e8",
        "swap" => "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f",
        other => other,
    };
    Uuid::parse_str(s).map_err(|_| format!("partition type `{name}`: use root, esp, linux-generic, var, tmp, home, srv, swap or a GUID"))
}

/// A stable UUID for `role` of image `name` (version 4 and RFC 4122 variant bits set,
/// so tools treat it as an ordinary random UUID).
pub fn derive_uuid(name: &str, role: &str) -> Uuid {
    let h = Sha256::digest(format!("kiln:{name}:{role}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid::from_bytes(b)
}

/// What a partition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Root,
    EmptyExt4,
    Blank,
}

#[derive(Debug, Clone)]
pub struct PartitionSpec {
    pub label: String,
    pub type_guid: Uuid,
    pub size: u64,
    pub content: Content,
}

#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub number: u32,
    pub name: String,
    pub type_guid: Uuid,
    pub part_guid: Uuid,
    pub first_lba: u64,
    pub last_lba: u64,
}

#[derive(Debug)]
pub struct DiskReport {
    pub disk_guid: Uuid,
    pub bytes: u64,
    pub partitions: Vec<PartitionInfo>,
    pub root: super::ext4::Ext4Report,
}

/// The root file system's options for image `name`.
pub fn root_fs_options(name: &str, size: SizeSpec, time: i64) -> Ext4Options {
    Ext4Options {
        size,
        uuid: *derive_uuid(name, "fs-root").as_bytes(),
        hash_seed: *derive_uuid(name, "hash-seed-root").as_bytes(),
        label: "root".into(),
        time,
        force_64bit: false,
    }
}

pub fn root_partuuid(name: &str) -> Uuid {
    derive_uuid(name, "part-root")
}

fn round_mib(n: u64) -> u64 {
    n.div_ceil(MIB) * MIB
}

/// Writes a GPT disk with the root file system of `tree` and the `extra` partitions after it.
pub fn write(
    tree: &Tree,
    file: &File,
    name: &str,
    root: &Ext4Options,
    extra: &[PartitionSpec],
) -> Result<DiskReport> {
    let prepared = Prepared::new(tree, root)?;
    let root_bytes = round_mib(prepared.bytes());
    let mut parts = Vec::new();
    let mut at = MIB;
    parts.push(PartitionInfo {
        number: 1,
        name: "root".into(),
        type_guid: ROOT_X86_64,
        part_guid: root_partuuid(name),
        first_lba: at / SECTOR,
        last_lba: (at + root_bytes) / SECTOR - 1,
    });
    at += root_bytes;
    for (i, p) in extra.iter().enumerate() {
        let size = round_mib(p.size);
        parts.push(PartitionInfo {
            number: i as u32 + 2,
            name: p.label.clone(),
            type_guid: p.type_guid,
            part_guid: derive_uuid(name, &format!("part-{}", p.label)),
            first_lba: at / SECTOR,
            last_lba: (at + size) / SECTOR - 1,
        });
        at += size;
    }
    // Room for the backup partition table and header at the end.
    let total = at + MIB;
    file.set_len(total)?;
    let report = prepared.write(&Target {
        file,
        offset: parts[0].first_lba * SECTOR,
    })?;
    for (p, spec) in parts[1..].iter().zip(extra) {
        if spec.content == Content::EmptyExt4 {
            let opts = Ext4Options {
                size: SizeSpec::Fixed((p.last_lba + 1 - p.first_lba) * SECTOR),
                uuid: *derive_uuid(name, &format!("fs-{}", p.name)).as_bytes(),
                hash_seed: *derive_uuid(name, &format!("hash-seed-{}", p.name)).as_bytes(),
                label: p.name.chars().take(16).collect(),
                time: root.time,
                force_64bit: false,
            };
            let empty = Tree::new(root.time);
            Prepared::new(&empty, &opts)?.write(&Target {
                file,
                offset: p.first_lba * SECTOR,
            })?;
        }
    }
    let disk_guid = derive_uuid(name, "disk");
    write_gpt(file, disk_guid, &parts)?;
    Ok(DiskReport {
        disk_guid,
        bytes: total,
        partitions: parts,
        root: report,
    })
}

fn write_gpt(file: &File, disk_guid: Uuid, parts: &[PartitionInfo]) -> Result<()> {
    let dev = file.try_clone()?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(dev, Some(disk_guid))
        .context("creating the partition table")?;
    let mut map = BTreeMap::new();
    for p in parts {
        map.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: gpt::partition_types::Type {
                    guid: p.type_guid,
                    os: gpt::partition_types::OperatingSystem::Linux,
                },
                part_guid: p.part_guid,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: 0,
                name: p.name.clone(),
            },
        );
    }
    disk.update_partitions(map).context("setting partitions")?;
    let mut dev = disk.write().context("writing the partition table")?;
    let sectors = file.metadata()?.len() / SECTOR;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut dev)
        .context("writing the protective MBR")?;
    Ok(())
}

/// The partitions of a GPT disk image.
pub fn read_partitions(file: &File) -> Result<Vec<PartitionInfo>> {
    let dev = file.try_clone()?;
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(dev)?;
    let mut out = Vec::new();
    for (n, p) in disk.partitions() {
        if !p.is_used() {
            continue;
        }
        out.push(PartitionInfo {
            number: *n,
            name: p.name.clone(),
            type_guid: p.part_type_guid.guid,
            part_guid: p.part_guid,
            first_lba: p.first_lba,
            last_lba: p.last_lba,
        });
    }
    if out.is_empty() {
        bail!("the partition table is empty");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_and_look_random() {
        let a = derive_uuid("img", "part-root");
        assert_eq!(a, derive_uuid("img", "part-root"));
        assert_ne!(a, derive_uuid("img2", "part-root"));
        assert_eq!(a.get_version_num(), 4);
        assert_eq!(partition_type("root").unwrap(), ROOT_X86_64);
        assert!(partition_type("nonsense").is_err());
    }
}
