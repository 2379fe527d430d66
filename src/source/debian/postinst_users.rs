//! System users a postinst makes with `adduser --system`, as sysusers.d lines: what
//! Debian packages did before they shipped sysusers.d files (bookworm's openssh-server
//! makes `sshd` so, and sshd refuses to start without it). kiln runs no maintainer
//! script, so it reads these lines and declares the users instead.

/// The sysusers.d lines for the `adduser --system` calls in `script`. A call whose user
/// name is not a literal (`$USER`) is skipped.
pub fn sysusers_lines(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in script.lines() {
        // The command ends where the shell's next one starts.
        let cmd = line
            .split(['|', ';', '&', '>'])
            .find(|part| part.contains("adduser") && part.contains("--system"));
        let Some(cmd) = cmd else { continue };
        let words: Vec<String> = shell_words(cmd);
        let Some(start) = words.iter().position(|w| w.ends_with("adduser")) else {
            continue;
        };
        let (mut home, mut shell, mut gecos, mut ingroup) = (None, None, None, None);
        let mut own_group = false;
        let mut name = None;
        let mut i = start + 1;
        while i < words.len() {
            let w = words[i].as_str();
            let value = words.get(i + 1).cloned();
            match w {
                "--home" => (home, i) = (value, i + 1),
                "--shell" => (shell, i) = (value, i + 1),
                "--gecos" | "--comment" => (gecos, i) = (value, i + 1),
                "--ingroup" | "--gid" => (ingroup, i) = (value, i + 1),
                "--uid" | "--firstuid" | "--lastuid" | "--extrausers" | "--conf" => i += 1,
                "--group" => own_group = true,
                w if w.starts_with("--") => {}
                w if name.is_none() => name = Some(w.to_string()),
                _ => {}
            }
            i += 1;
        }
        let Some(name) = name.filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        }) else {
            continue;
        };
        let literal = |v: Option<String>| v.filter(|s| !s.contains('$'));
        // adduser --system puts a user without --group or --ingroup in nogroup.
        let group = match (own_group, literal(ingroup)) {
            (true, _) => String::new(),
            (false, Some(g)) => format!(":{g}"),
            (false, None) => ":nogroup".to_string(),
        };
        let quote = |s: String| format!("\"{}\"", s.replace('"', ""));
        out.push(format!(
            "u {name} -{group} {} {} {}",
            literal(gecos).map(quote).unwrap_or_else(|| "-".into()),
            literal(home).unwrap_or_else(|| "/nonexistent".into()),
            literal(shell).unwrap_or_else(|| "/usr/sbin/nologin".into()),
        ));
    }
    out
}

/// Words of a shell command, quotes removed (no expansion).
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adduser_system_calls_become_sysusers_lines() {
        // bookworm's openssh-server postinst.
        let sshd = "if ! getent passwd sshd >/dev/null; then\n\
                    \tadduser --quiet --system --no-create-home --home /run/sshd --shell /usr/sbin/nologin sshd\nfi\n";
        assert_eq!(
            sysusers_lines(sshd),
            ["u sshd -:nogroup - /run/sshd /usr/sbin/nologin"]
        );
        let own = "adduser --system --group --home /var/lib/x --gecos \"X daemon,,,\" xd || true";
        assert_eq!(
            sysusers_lines(own),
            ["u xd - \"X daemon,,,\" /var/lib/x /usr/sbin/nologin"]
        );
        let ingroup =
            "  adduser --system --ingroup messagebus --home /nonexistent messagebus 2>/dev/null";
        assert_eq!(
            sysusers_lines(ingroup),
            ["u messagebus -:messagebus - /nonexistent /usr/sbin/nologin"]
        );
        assert!(sysusers_lines("adduser --system \"$USER\"").is_empty());
        assert!(sysusers_lines("adduser alice").is_empty());
    }
}
