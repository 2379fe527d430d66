//! `kiln import-mkosi`: mkosi configurations in mkosi 14's layout (the Memorizer test
//! VM) and the current one import, build and boot; broken ones are refused at their line.

mod common;

use std::path::{Path, PathBuf};

use common::{debian_kernel, kernel_tree, kiln, run, stderr, write};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mkosi")
        .join(name)
}

fn import(config: &Path, dest: &Path) -> std::process::Output {
    run(kiln().arg("import-mkosi").arg(config).arg("-o").arg(dest))
}

#[test]
fn the_memorizer_vm_in_mkosi_14s_layout_imports_builds_and_boots() {
    let d = tempfile::tempdir().unwrap();
    let profile = d.path().join("memorizer.toml");
    let o = import(&fixture("v14-memorizer"), &profile);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    // Loud about the distribution, and every unmapped setting or script with its place.
    assert!(
        err.contains("Distribution=ubuntu (Release=jammy) becomes Debian bookworm"),
        "{err}"
    );
    assert!(
        err.contains("v14-memorizer/mkosi.default:28: WithDocs=no"),
        "{err}"
    );
    assert!(err.contains("mkosi.postinst: a script mkosi runs"), "{err}");

    let t: toml::Table = std::fs::read_to_string(&profile).unwrap().parse().unwrap();
    assert_eq!(t["distribution"]["suite"].as_str(), Some("bookworm"));
    let packages: Vec<&str> = t["distribution"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in [
        "apt",
        "iproute2",
        "curl",
        "systemd-resolved",
        "openssh-server",
    ] {
        assert!(packages.contains(&p), "{p} in {packages:?}");
    }
    assert!(!packages.contains(&"vim"), "!vim in a drop-in removes it");
    assert_eq!(t["output"]["format"].as_str(), Some("disk"));
    assert_eq!(t["output"]["root_size"].as_str(), Some("3G"));
    assert_eq!(t["system"]["hostname"].as_str(), Some("VM"));
    assert_eq!(t["system"]["root_password"].as_str(), Some("root"));
    assert_eq!(t["system"]["autologin"].as_bool(), Some(true));
    assert_eq!(t["qemu"]["memory"].as_str(), Some("8G"));
    assert_eq!(t["qemu"]["cpus"].as_integer(), Some(1));
    assert_eq!(t["network"]["mode"].as_str(), Some("user"));
    let cmdline = t["kernel"]["cmdline"].as_array().unwrap();
    assert!(cmdline.iter().any(|a| a.as_str() == Some("nokaslr")));
    assert!(cmdline
        .iter()
        .any(|a| a.as_str() == Some("memalloc_size=4")));

    // Booted as the project boots it: their kernel (here the stand-in tree), the test
    // checking what the configuration set up. Less memory than theirs, for TCG.
    let run_profile = write(
        d.path(),
        "boot.toml",
        "version = 1\ninclude = [\"memorizer.toml\"]\n[qemu]\nmemory = \"1G\"\naccel = \"tcg\"\n\
         [test]\ntimeout = \"900s\"\ncommand = \"test \\\"$(hostname)\\\" = VM && grep -q Memorizer /etc/motd \
         && grep -q nokaslr /proc/cmdline \
         && for i in $(seq 120); do systemctl is-active -q ssh.service \
         && break; sleep 1; done && systemctl is-active ssh.service\"\n",
    );
    let o = run(kiln()
        .arg("test")
        .arg(&run_profile)
        .arg("-o")
        .arg(d.path().join("out"))
        .arg("--kernel-tree")
        .arg(kernel_tree()));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_current_layout_config_with_includes_and_drop_ins_imports_builds_and_boots() {
    let d = tempfile::tempdir().unwrap();
    let profile = d.path().join("tiny.toml");
    let o = import(&fixture("current/mkosi.conf"), &profile);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("current/mkosi.conf:17: BuildPackages=gcc"),
        "{err}"
    );
    assert!(
        err.contains("current/mkosi.conf:18: Locale=C.UTF-8"),
        "{err}"
    );
    let t: toml::Table = std::fs::read_to_string(&profile).unwrap().parse().unwrap();
    assert_eq!(t["name"].as_str(), Some("tiny"));
    assert_eq!(t["output"]["format"].as_str(), Some("initramfs"));
    // From the Include= and the drop-in directory.
    assert_eq!(t["system"]["hostname"].as_str(), Some("tiny"));
    assert_eq!(t["remove"][0].as_str(), Some("/usr/share/doc"));
    assert_eq!(t["variables"]["GREETING"].as_str(), Some("hello"));

    let run_profile = write(
        d.path(),
        "boot.toml",
        "version = 1\nname = \"tinyboot\"\ninclude = [\"tiny.toml\"]\n[qemu]\naccel = \"tcg\"\n\
         [test]\ncommand = \"test \\\"$(cat /etc/hostname)\\\" = tiny && test ! -e /usr/share/doc\"\n",
    );
    let o = run(kiln()
        .arg("test")
        .arg(&run_profile)
        .arg("-o")
        .arg(d.path().join("out"))
        .arg("--kernel")
        .arg(debian_kernel()));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn broken_configs_are_refused_at_their_line_and_write_nothing() {
    let d = tempfile::tempdir().unwrap();
    // (case, its files as (name, text), what the error says)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        (
            "syntax",
            &[(
                "mkosi.conf",
                "[Content]\nPackages=bash\nthis is not a setting\n",
            )],
            "mkosi.conf:3: `this is not a setting` is neither",
        ),
        (
            "section",
            &[(
                "mkosi.conf",
                "[Distribution]\nRelease=trixie\n[Bogus]\nX=1\n",
            )],
            "mkosi.conf:3: unknown section [Bogus]",
        ),
        (
            "setting",
            &[("mkosi.conf", "[Content]\nPakages=bash\n")],
            "mkosi.conf:2: unknown setting Pakages= in [Content]",
        ),
        (
            "cycle",
            &[
                ("mkosi.conf", "[Config]\nInclude=a.conf\n"),
                ("a.conf", "[Config]\nInclude=mkosi.conf\n"),
            ],
            "Include= cycle",
        ),
        (
            "boolean",
            &[("mkosi.conf", "[Content]\nAutologin=perhaps\n")],
            "mkosi.conf:2: Autologin=perhaps is not a boolean",
        ),
    ];
    for (name, files, want) in cases {
        let dir = d.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for (f, text) in files {
            write(&dir, f, text);
        }
        let dest = d.path().join(format!("{name}.toml"));
        let o = import(&dir, &dest);
        assert_eq!(o.status.code(), Some(2), "{name}");
        assert!(stderr(&o).contains(want), "{name}: {}", stderr(&o));
        assert!(!dest.exists(), "{name}: no output file");
    }
}

/// mkosi 14 itself (Debian bookworm's `mkosi` package) reads the mkosi 14 fixture as the
/// import does: the same packages after drop-ins and `!` removals, hostname, password,
/// autologin and root size.
#[test]
fn mkosi_14_reads_the_fixture_as_the_import_does() {
    let dir = fixture("v14-memorizer");
    let summary = std::process::Command::new("mkosi")
        .arg("summary")
        .current_dir(&dir)
        .output()
        .expect("mkosi 14 (apt install mkosi)");
    // mkosi 14 prints its summary on stderr.
    let text = String::from_utf8_lossy(&summary.stderr).into_owned();
    assert!(summary.status.success(), "{text}");
    // "  Packages: apt" then continuation lines with the value alone.
    let mut theirs: Vec<String> = Vec::new();
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Packages:"));
    if let Some(first) = lines.next() {
        theirs.push(first.split(':').nth(1).unwrap().trim().to_string());
        theirs.extend(
            lines
                .take_while(|l| !l.contains(':'))
                .map(|l| l.trim().to_string()),
        );
    }
    let field = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name}:")))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(field("Hostname"), "VM");
    assert_eq!(field("Autologin"), "yes");
    assert_eq!(field("Password"), "set");
    assert_eq!(field("Root Partition"), "3.0G");

    let d = tempfile::tempdir().unwrap();
    let profile = d.path().join("m.toml");
    assert!(import(&dir, &profile).status.success());
    let t: toml::Table = std::fs::read_to_string(&profile).unwrap().parse().unwrap();
    // kiln adds sshd (Ssh=yes) and what a systemd disk needs to boot.
    let ours: Vec<String> = t["distribution"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .filter(|p| !["openssh-server", "systemd-sysv", "udev", "kmod"].contains(&p.as_str()))
        .collect();
    assert_eq!(ours, theirs);
}
