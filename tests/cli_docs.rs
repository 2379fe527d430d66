//! Completion scripts and man pages, generated from the command line's definitions and
//! checked with bash's completion machinery and groff.

mod common;

use std::process::Command;

use common::{kiln, run, stdout};

/// What bash's completion offers after `words` (the last one being completed).
fn complete(words: &str) -> Vec<String> {
    let script = stdout(&run(kiln().args(["completions", "bash"])));
    let dir = tempfile::tempdir().unwrap();
    let path = common::write(dir.path(), "kiln.bash", &script);
    let n = words.split_whitespace().count() - usize::from(!words.ends_with(' '));
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             read -ra COMP_WORDS <<< '{words}'; {extra} COMP_CWORD={n}; \
             _kiln kiln \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display(),
            extra = if words.ends_with(' ') {
                "COMP_WORDS+=('');"
            } else {
                ""
            },
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_commands_options_and_values() {
    let commands = complete("kiln ");
    for c in [
        "build",
        "test",
        "exec",
        "init",
        "completions",
        "man",
        "matrix",
    ] {
        assert!(commands.iter().any(|w| w == c), "{c} in {commands:?}");
    }
    assert_eq!(complete("kiln bui"), ["build"]);
    let options = complete("kiln test --ker");
    assert!(options.iter().any(|w| w == "--kernel"), "{options:?}");
    assert!(options.iter().any(|w| w == "--kernel-tree"), "{options:?}");
    let templates = complete("kiln init x --template ");
    assert_eq!(
        templates,
        ["busybox", "debian-disk", "memorizer", "kernel-matrix"]
    );
}

#[test]
fn every_command_has_a_man_page_that_groff_renders_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(kiln().arg("man").arg("--dir").arg(dir.path()));
    assert!(out.status.success());
    let help = stdout(&run(kiln().arg("help")));
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    // Every command `kiln help` lists has its page.
    let listed = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        // A command's line starts two spaces in; its wrapped help, further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "));
    for line in listed {
        let cmd = line.split_whitespace().next().unwrap();
        if cmd != "help" {
            assert!(pages.contains(&format!("kiln-{cmd}.1")), "{cmd}: {pages:?}");
        }
    }
    assert!(pages.contains(&"kiln-matrix-list.1".to_string()));
    for page in &pages {
        // man-db's pipeline: preconv for the non-ASCII text, then groff; -ww warns of all.
        let check = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "preconv {0} | groff -man -Tutf8 -ww -z",
                dir.path().join(page).display()
            ))
            .output()
            .unwrap();
        assert!(check.status.success(), "{page}");
        assert_eq!(String::from_utf8_lossy(&check.stderr), "", "{page}");
    }
    let init = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("kiln-init.1"))
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&init.stdout);
    assert!(text.contains("--template"), "{text}");
    assert!(text.contains("kiln init"), "{text}");
    // Without --dir, the top page goes to stdout, and is the same as the file.
    let top = run(kiln().arg("man"));
    assert_eq!(
        top.stdout,
        std::fs::read(dir.path().join("kiln.1")).unwrap()
    );
}

#[test]
fn fish_completes_and_zsh_reads_its_script() {
    let dir = tempfile::tempdir().unwrap();
    let fish = common::write(
        dir.path(),
        "kiln.fish",
        &stdout(&run(kiln().args(["completions", "fish"]))),
    );
    let out = Command::new("fish")
        .arg("-c")
        .arg(format!(
            "source {}; complete -C 'kiln bui'; complete -C 'kiln init x --template '",
            fish.display()
        ))
        .output()
        .expect("fish (apt install fish)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offered: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect();
    assert!(offered.contains(&"build".to_string()), "{offered:?}");
    for t in ["busybox", "debian-disk", "memorizer", "kernel-matrix"] {
        assert!(offered.contains(&t.to_string()), "{t}: {offered:?}");
    }

    // zsh loads completion functions from $fpath by their #compdef line; the script must
    // parse (zsh -n) and declare itself for kiln.
    let zsh_script = stdout(&run(kiln().args(["completions", "zsh"])));
    assert!(zsh_script.starts_with("#compdef kiln"), "{zsh_script:.40}");
    let zsh = common::write(dir.path(), "_kiln", &zsh_script);
    let check = Command::new("zsh")
        .arg("-n")
        .arg(&zsh)
        .output()
        .expect("zsh (apt install zsh)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
