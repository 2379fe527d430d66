//! GPT disk images: a protective MBR, primary and backup headers, partitions aligned to
//! 1 MiB and typed by the Discoverable Partitions Specification, each file system written
//! in place at its offset in one sparse file. GUIDs derive from the image name, so the
//! same profile always gives the same `root=PARTUUID=…`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::ext4::writer::{Prepared, Target};
use super::ext4::{Ext4Options, SizeSpec};
use super::image_digest::{self, WriteWatch};
use super::manifest::Manifest;
use super::options::{FreeSpace, PartitionFs, PartitionType, RootSize};
use super::ImageWriter;
use crate::tree::digest::FileDigest;
use crate::tree::Tree;
use crate::util::atomic::AtomicFile;
use crate::util::progress;
use crate::util::size::human_bytes;

/// GPT type GUID of an x86-64 root partition (Discoverable Partitions Specification).
pub const ROOT_X86_64: Uuid = Uuid::from_u128(0x4f68bce3_e8cd_4db1_96e7_fbcaf984b709);
/// Bytes per logical sector.
pub const SECTOR: u64 = 512;
/// Bytes in a MiB, the partition alignment.
pub const MIB: u64 = 1 << 20;

/// The GPT type GUID of a partition type.
pub fn type_guid(t: PartitionType) -> Uuid {
    match t {
        PartitionType::RootX86_64 => ROOT_X86_64,
        PartitionType::Esp => Uuid::from_u128(0xc12a7328_f81f_11d2_ba4b_00a0c93ec93b),
        PartitionType::LinuxGeneric => Uuid::from_u128(0x0fc63daf_8483_4772_8e79_3d69d8477de4),
        PartitionType::Var => Uuid::from_u128(0x4d21b016_b534_45c2_a9fb_5c16e091fd2d),
        PartitionType::Tmp => Uuid::from_u128(0x7ec6f557_3bc5_4aca_b293_16ef5df639d1),
        PartitionType::Home => Uuid::from_u128(0x933ac7e1_2eb4_4f13_b844_0e14e2aef915),
        PartitionType::Srv => Uuid::from_u128(0x3b8f8425_20e0_4f3b_907f_1a25a76f98e8),
        PartitionType::Swap => Uuid::from_u128(0x0657fd6d_a4ab_43c4_84e5_0933c84b4f4f),
        PartitionType::Guid(g) => g,
    }
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

/// An extra partition after the root partition.
#[derive(Debug, Clone)]
pub struct PartitionSpec {
    /// The GPT partition name.
    pub label: String,
    /// Its type.
    pub kind: PartitionType,
    /// Its size in bytes, rounded up to whole MiB.
    pub size: u64,
    /// What it holds.
    pub content: PartitionFs,
    /// Placed (and numbered) ahead of the root partition.
    pub before_root: bool,
}

/// One partition in a GPT.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    /// Partition number, from 1.
    pub number: u32,
    /// GPT partition name; the root partition's is "root".
    pub name: String,
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// Unique partition GUID (PARTUUID).
    pub part_guid: Uuid,
    /// First sector (512-byte LBA).
    pub first_lba: u64,
    /// Last sector, inclusive (512-byte LBA).
    pub last_lba: u64,
}

/// What the disk writer produced.
#[derive(Debug)]
pub struct DiskReport {
    /// Disk GUID in the GPT header.
    pub disk_guid: Uuid,
    /// Size of the image file in bytes.
    pub bytes: u64,
    /// Every partition, root first.
    pub partitions: Vec<PartitionInfo>,
    /// The root file system's report.
    pub root: super::ext4::Ext4Report,
    /// The image's digest: its sparse digest, or its plain sha256 when it has few holes.
    pub digest: FileDigest,
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

/// The root partition's PARTUUID for image `name`, as the kernel command line uses it.
pub fn root_partuuid(name: &str) -> Uuid {
    derive_uuid(name, "part-root")
}

fn round_mib(n: u64) -> u64 {
    n.div_ceil(MIB) * MIB
}

/// Writes a GPT disk with the root file system of `tree` and the `extra` partitions
/// (those marked `before_root` ahead of it, the others after it).
pub fn write(
    tree: &Tree,
    file: &File,
    name: &str,
    root: &Ext4Options,
    extra: &[PartitionSpec],
) -> Result<DiskReport> {
    let prepared = Prepared::new(tree, root)?;
    let root_bytes = round_mib(prepared.bytes());
    // None is the root partition: the ones asked to go ahead of it, then root, then the rest.
    let order: Vec<Option<&PartitionSpec>> = extra
        .iter()
        .filter(|p| p.before_root)
        .map(Some)
        .chain(std::iter::once(None))
        .chain(extra.iter().filter(|p| !p.before_root).map(Some))
        .collect();
    let mut parts = Vec::new();
    let mut at = MIB;
    for (i, spec) in order.iter().enumerate() {
        let (size, info) = match spec {
            None => (
                root_bytes,
                ("root".to_string(), ROOT_X86_64, root_partuuid(name)),
            ),
            Some(p) => (
                round_mib(p.size),
                (
                    p.label.clone(),
                    type_guid(p.kind),
                    derive_uuid(name, &format!("part-{}", p.label)),
                ),
            ),
        };
        parts.push(PartitionInfo {
            number: i as u32 + 1,
            name: info.0,
            type_guid: info.1,
            part_guid: info.2,
            first_lba: at / SECTOR,
            last_lba: (at + size) / SECTOR - 1,
        });
        at += size;
    }
    // Room for the backup partition table and header at the end.
    let total = at + MIB;
    file.set_len(total)?;
    let root_at = order.iter().position(Option::is_none).unwrap_or(0);
    let root_part = &parts[root_at];
    // Only the root file system's writer writes into its partition: the segments wholly
    // inside it may be hashed while it writes.
    let watch = WriteWatch::new(
        root_part.first_lba * SECTOR,
        (root_part.last_lba + 1) * SECTOR,
    );
    let (report, early) = std::thread::scope(|scope| -> Result<_> {
        let hasher = scope.spawn(|| watch.hash_behind(file, total));
        let written = {
            let _finishing = watch.finishing();
            prepared.write(&Target {
                file,
                offset: root_part.first_lba * SECTOR,
                watch: Some(&watch),
            })
        };
        let early = hasher
            .join()
            .map_err(|_| anyhow::anyhow!("the image hashing thread panicked"))?;
        Ok((written?, early))
    })?;
    for (p, spec) in parts.iter().zip(&order) {
        let Some(spec) = spec else { continue };
        if spec.content == PartitionFs::Ext4 {
            let opts = Ext4Options {
                size: SizeSpec::Fixed((p.last_lba + 1 - p.first_lba) * SECTOR),
                uuid: *derive_uuid(name, &format!("fs-{}", p.name)).as_bytes(),
                hash_seed: *derive_uuid(name, &format!("hash-seed-{}", p.name)).as_bytes(),
                label: p.name.chars().take(16).collect(),
                time: root.time,
                force_64bit: false,
            };
            super::ext4::writer::write_empty(file, p.first_lba * SECTOR, &opts)?;
        }
    }
    let disk_guid = derive_uuid(name, "disk");
    write_gpt(file, disk_guid, &parts)?;
    let digest = image_digest::digest(file, total, &watch, &early).context("hashing the image")?;
    Ok(DiskReport {
        disk_guid,
        bytes: total,
        partitions: parts,
        root: report,
        digest,
    })
}

/// Everything the disk writer needs besides the tree.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// The image name, from which every GUID and UUID derives.
    pub name: String,
    /// The root file system's size.
    pub root_size: RootSize,
    /// Free space in an automatically sized root file system.
    pub free_space: FreeSpace,
    /// Partitions after the root partition.
    pub partitions: Vec<PartitionSpec>,
    /// Timestamp of the file systems themselves.
    pub time: i64,
    /// Also write a qcow2 copy beside the raw image.
    pub qcow2: bool,
    /// Give the plain sha256 of the image even when it is mostly holes.
    pub image_sha256: bool,
}

impl ImageWriter for DiskOptions {
    fn write(&self, tree: &Tree, dest: &Path) -> Result<Manifest> {
        let size = match self.root_size {
            RootSize::Fixed(bytes) => SizeSpec::Fixed(bytes),
            RootSize::Auto => SizeSpec::Auto {
                free: self.free_space,
                min_bytes: 0,
            },
        };
        let root = root_fs_options(&self.name, size, self.time);
        let mut out = AtomicFile::create(dest)?;
        let report = write(tree, out.file(), &self.name, &root, &self.partitions)
            .with_context(|| format!("writing {}", dest.display()))?;
        let hashing = || format!("hashing {}", dest.display());
        let (mut image_sha256, image_sparse_sha256) = match report.digest.clone() {
            FileDigest::Sha256(h) => (Some(h), None),
            FileDigest::Sparse(h) => (None, Some(h)),
        };
        if self.image_sha256 && image_sha256.is_none() {
            image_sha256 = Some(sparse_sha256(out.file(), report.bytes).with_context(hashing)?);
        }
        out.commit()?;
        progress::step(format!(
            "root file system: {} ({} used, {} inodes); PARTUUID {}",
            human_bytes(report.root.bytes),
            human_bytes((report.root.blocks - report.root.free_blocks) * 4096),
            report.root.inodes_used,
            root_partuuid(&self.name)
        ));
        if self.qcow2 {
            let q = super::qcow2::convert(dest)?;
            progress::step(format!("qcow2 copy: {}", q.display()));
        }
        Ok(Manifest {
            image: super::file_name(dest),
            format: "disk".into(),
            image_sha256,
            image_sparse_sha256,
            entries: report.root.manifest,
            ..Default::default()
        })
    }
}

/// The sha256 of the first `len` bytes of `file`, as `sha256sum` gives it, with its
/// holes hashed as the zeros they read as, without reading them.
fn sparse_sha256(file: &File, len: u64) -> Result<String> {
    use crate::tree::digest::{Reader, Reading};
    use sha2::{Digest, Sha256};
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut h = Sha256::new();
    let mut at = 0u64;
    let zero_run = |h: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(CHUNK as u64) as usize;
            h.update(&zeros[..k]);
            n -= k as u64;
        }
    };
    // kiln's own image, written and closed to other writers: mapped, not copied out.
    let mut reader = Reader::new(Reading::Mapped);
    for (start, n) in crate::tree::data::host_data_ranges(file, len)? {
        zero_run(&mut h, start - at);
        reader.pieces(file, start, start + n, &mut |_, piece| {
            h.update(piece);
            Ok(())
        })?;
        at = start + n;
    }
    zero_run(&mut h, len - at);
    Ok(hex::encode(h.finalize()))
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
        assert_eq!(type_guid(PartitionType::RootX86_64), ROOT_X86_64);
        assert_eq!(
            type_guid(PartitionType::Esp).to_string(),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
    }
}
