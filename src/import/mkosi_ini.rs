//! Reading mkosi's configuration as mkosi does: INI files (`mkosi.conf` and
//! `mkosi.conf.d/*.conf` in the current layout, `mkosi.default` and
//! `mkosi.default.d/*.conf` in mkosi 14's), `Include=` followed, every setting kept with
//! the file and line it came from. Unknown sections and settings, broken lines and
//! include cycles are errors at their line: a typo must not vanish from an import.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Which generation of mkosi's layout a configuration uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// mkosi 14 and before: `mkosi.default`, `[Partitions]`, `[Host] Qemu*`, `gpt_ext4`.
    V14,
    /// mkosi 15 and later: `mkosi.conf`, `[Config] Include=`, `[Runtime]`.
    Current,
}

/// One `Key=Value` as written, continuation lines joined with '\n'.
#[derive(Debug, Clone)]
pub struct Setting {
    /// Its section, as written (`Content`).
    pub section: String,
    /// Its name, as written (`Packages`).
    pub key: String,
    /// Its value, trimmed.
    pub value: String,
    /// The file it is in.
    pub file: PathBuf,
    /// Its line, from 1.
    pub line: usize,
}

impl Setting {
    /// `FILE:LINE`, for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// A configuration read in mkosi's order.
#[derive(Debug)]
pub struct Config {
    /// The directory holding `mkosi.conf` (where `mkosi.extra/` and scripts are found).
    pub dir: PathBuf,
    /// Which layout it is written in.
    pub layout: Layout,
    /// Every setting, in the order mkosi applies them.
    pub settings: Vec<Setting>,
    /// Sections `[Match]` that kiln does not evaluate: (file, line).
    pub matches: Vec<(PathBuf, usize)>,
}

/// Sections mkosi 14 and current mkosi know.
const SECTIONS: &[&str] = &[
    "Match",
    "TriggerMatch",
    "Config",
    "Include",
    "Distribution",
    "Output",
    "Content",
    "Partitions",
    "Validation",
    "Host",
    "Runtime",
    "Build",
    "Packages",
    "Preset",
];

/// Settings mkosi 14 and current mkosi know, in any section (mkosi moved many between
/// sections over the years; where one is written does not change what it means here).
const SETTINGS: &str = "
Distribution Release Mirror LocalMirror Repositories RepositoryKeyCheck RepositoryKeyFetch
Architecture UseHostRepositories CacheOnly PackageManagerTrees Snapshot
Format Output ManifestFormat OutputDirectory WorkspaceDirectory CacheDirectory
PackageCacheDirectory BuildDirectory Force Bootable BootProtocols KernelCommandLine
SecureBoot SecureBootKey SecureBootCertificate SecureBootValidDays SecureBootCommonName
SecureBootSignTool SecureBootKeySource SecureBootCertificateSource SecureBootAutoEnroll
ReadOnly Minimize Encrypt Verity VerityKey VerityCertificate CompressFs CompressOutput
CompressLevel Mksquashfs QCow2 Hostname ImageVersion ImageId WithUnifiedKernelImages
HostonlyInitrd CacheInitrd SplitArtifacts UsrOnly OutputSplitRoot OutputSplitVerity
OutputSplitKernel TarStripSELinuxContext SectorSize RepartDirectories RepartOffline Overlay
Seed SourceDateEpoch CleanScripts OutputExtension OutputMode
BasePackages Packages BuildPackages VolatilePackages VolatilePackageDirectories
PackageDirectories WithRecommends WithDocs WithTests Cache BaseTrees SkeletonTrees
ExtraTrees CleanPackageMetadata RemoveFiles RemovePackages Environment EnvironmentFiles
PassEnvironment BuildSources BuildSourcesEphemeral IncludeDirectory InstallDirectory
BuildScript BuildScripts PrepareScript PrepareScripts PostInstallationScript
PostInstallationScripts FinalizeScript FinalizeScripts PostOutputScripts SyncScripts
ConfigureScripts SourceFileTransfer SourceFileTransferFinal SourceResolveSymlinks
SourceResolveSymlinksFinal WithNetwork Settings MachineId Bootloader BiosBootloader
ShimBootloader UnifiedKernelImages UnifiedKernelImageFormat UnifiedKernelImageProfiles
Initrds InitrdPackages InitrdVolatilePackages InitrdProfiles KernelModulesInclude
KernelModulesExclude KernelModulesIncludeHost KernelModulesInitrd KernelModulesInitrdInclude
KernelModulesInitrdExclude KernelModulesInitrdIncludeHost KernelModules KernelInitrdModules
KernelModulesInitrdHost Firmwares FirmwareInclude FirmwareExclude MicrocodeHost
Locale LocaleMessages Keymap Timezone RootPassword RootShell Autologin MakeInitrd Ssh
SELinuxRelabel Password PasswordIsHashed Checksum Sign Key BMap Passphrase
SignExpectedPcr SignExpectedPcrKey SignExpectedPcrCertificate SignExpectedPcrKeySource
SignExpectedPcrCertificateSource OpenPGPTool Devicetree Devicetrees Splash
BaseImage RootSize ESPSize BiosSize SwapSize HomeSize SrvSize VarSize TmpSize
ExtraSearchPaths QemuHeadless QemuGui QemuSmp QemuMem QemuKvm QemuVsock QemuVsockCid
QemuSwtpm QemuCdrom QemuFirmware QemuFirmwareVariables QemuKernel QemuDrives QemuArgs
QemuBoot NspawnKeepUnit Netdev Ephemeral SshKey SshAgent SshPort SshTimeout
SshCertificate Incremental ToolsTree ToolsTreeDistribution ToolsTreeRelease
ToolsTreeMirror ToolsTreeRepositories ToolsTreePackageManagerTrees ToolsTreePackages
ToolsTreeSandboxTrees ToolsTreeCertificates ToolsTreeProfiles ToolsTreeSyncScripts
ToolsTreePrepareScripts RuntimeTrees RuntimeSize RuntimeScratch RuntimeNetwork
RuntimeBuildSources RuntimeHome KernelCommandLineExtra Acl Credentials AutoBump
NSpawnSettings VirtualMachineMonitor Console CPUs RAM KVM VSock VSockCID TPM CDROM
Removable Firmware FirmwareVariables Linux Drives UnitProperties Machine ForwardJournal
Register StorageTargetMode BindUser SandboxTrees UseSubvolumes History ProxyUrl
ProxyPeerCertificate ProxyClientCertificate ProxyClientKey ProxyExclude Include
InitrdInclude Dependencies MinimumVersion Profiles Profile Images Image Presets
Distributions Releases PathExists SystemdVersion HostArchitecture ImageVersions
Bootables Formats Environments BuildSourcesEphemerals RepositoryKeyChecks Dependency
";

fn known_setting(name: &str) -> bool {
    SETTINGS.split_whitespace().any(|s| s == name)
}

/// Reads the configuration at `path`: a directory holding `mkosi.conf` or
/// `mkosi.default`, or one of those files.
pub fn read(path: &Path) -> Result<Config> {
    let (dir, top) = if path.is_dir() {
        let conf = path.join("mkosi.conf");
        let default = path.join("mkosi.default");
        if conf.is_file() {
            (path.to_path_buf(), conf)
        } else if default.is_file() {
            (path.to_path_buf(), default)
        } else {
            bail!(
                "{} holds neither mkosi.conf nor mkosi.default; name the directory of an mkosi \
                 configuration, or its file",
                path.display()
            );
        }
    } else {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        (dir, path.to_path_buf())
    };
    let v14_name = top.file_name().is_some_and(|n| n == "mkosi.default");
    let mut reader = Reader::default();
    reader.file(&top)?;
    // Drop-in directories, in name order, after the main file.
    let dropins = dir.join(if v14_name {
        "mkosi.default.d"
    } else {
        "mkosi.conf.d"
    });
    if dropins.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dropins)
            .with_context(|| format!("reading {}", dropins.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        files.sort();
        for f in files {
            reader.file(&f)?;
        }
    }
    let v14_settings = reader.settings.iter().any(|s| {
        s.section == "Partitions"
            || s.key.starts_with("Qemu")
            || s.key == "Netdev"
            || (s.key == "Format" && s.value.starts_with("gpt_"))
    });
    Ok(Config {
        dir,
        layout: if v14_name || v14_settings {
            Layout::V14
        } else {
            Layout::Current
        },
        settings: reader.settings,
        matches: reader.matches,
    })
}

#[derive(Default)]
struct Reader {
    settings: Vec<Setting>,
    matches: Vec<(PathBuf, usize)>,
    /// Files being read, for include cycles.
    stack: Vec<PathBuf>,
}

impl Reader {
    fn file(&mut self, path: &Path) -> Result<()> {
        let id = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(chain) = crate::util::cycle::include_cycle(&self.stack, &id) {
            bail!("Include= cycle: {chain}");
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        self.stack.push(id);
        let mut section: Option<String> = None;
        // The setting a continuation line extends: its index in `settings`.
        let mut last: Option<usize> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let at = || format!("{}:{line}", path.display());
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                last = None;
                continue;
            }
            if trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if raw.starts_with([' ', '\t']) {
                let Some(idx) = last else {
                    bail!("{}: an indented line continues no setting", at());
                };
                let s = &mut self.settings[idx];
                if !s.value.is_empty() {
                    s.value.push('\n');
                }
                s.value.push_str(trimmed);
                continue;
            }
            if let Some(name) = trimmed.strip_prefix('[') {
                let Some(name) = name.strip_suffix(']') else {
                    bail!("{}: `{trimmed}` opens a section without closing it", at());
                };
                if !SECTIONS.contains(&name) {
                    bail!(
                        "{}: unknown section [{name}] (mkosi knows {})",
                        at(),
                        SECTIONS.join(", ")
                    );
                }
                if name == "Match" || name == "TriggerMatch" {
                    self.matches.push((path.to_path_buf(), line));
                }
                section = Some(name.to_string());
                last = None;
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                bail!(
                    "{}: `{trimmed}` is neither a [Section] nor Setting=Value",
                    at()
                );
            };
            let key = key.trim();
            let Some(sec) = section.clone() else {
                bail!("{}: {key}= comes before any [Section]", at());
            };
            if !known_setting(key) {
                bail!("{}: unknown setting {key}= in [{sec}]", at());
            }
            if sec == "Match" || sec == "TriggerMatch" {
                last = None;
                continue;
            }
            if key == "Include" {
                for inc in value.split_whitespace() {
                    let target = path.parent().unwrap_or(Path::new(".")).join(inc);
                    // One message, the include's place first: the cycle or error it leads to
                    // is named in it.
                    self.file(&target)
                        .map_err(|e| anyhow::anyhow!("{}: Include={inc}: {e:#}", at()))?;
                }
                last = None;
                continue;
            }
            self.settings.push(Setting {
                section: sec,
                key: key.to_string(),
                value: value.trim().to_string(),
                file: path.to_path_buf(),
                line,
            });
            last = Some(self.settings.len() - 1);
        }
        self.stack.pop();
        Ok(())
    }
}
