//! File types as mode bits (S_IFMT), the one table every reader and writer shares.

/// The file-type bits of a mode.
pub const S_IFMT: u32 = 0o170000;

/// What kind of file a mode describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    Regular,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl FileType {
    /// The S_IFMT bits of this type.
    pub const fn bits(self) -> u32 {
        match self {
            FileType::Regular => 0o100000,
            FileType::Dir => 0o040000,
            FileType::Symlink => 0o120000,
            FileType::Char => 0o020000,
            FileType::Block => 0o060000,
            FileType::Fifo => 0o010000,
            FileType::Socket => 0o140000,
        }
    }

    /// The type a mode's S_IFMT bits say; unknown bits read as a regular file.
    pub fn from_mode(mode: u32) -> FileType {
        match mode & S_IFMT {
            0o040000 => FileType::Dir,
            0o120000 => FileType::Symlink,
            0o020000 => FileType::Char,
            0o060000 => FileType::Block,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            _ => FileType::Regular,
        }
    }

    /// The first character of `ls -l`'s mode column.
    pub fn ls_char(self) -> char {
        match self {
            FileType::Regular => '-',
            FileType::Dir => 'd',
            FileType::Symlink => 'l',
            FileType::Char => 'c',
            FileType::Block => 'b',
            FileType::Fifo => 'p',
            FileType::Socket => 's',
        }
    }
}

/// A mode as `ls -l` shows it, e.g. `drwxr-xr-x` or `-rwsr-xr-x`.
pub fn mode_string(mode: u32) -> String {
    let mut s = String::from(FileType::from_mode(mode).ls_char());
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let set = mode & bit != 0;
        let special = match i {
            2 if mode & 0o4000 != 0 => Some(if set { 's' } else { 'S' }),
            5 if mode & 0o2000 != 0 => Some(if set { 's' } else { 'S' }),
            8 if mode & 0o1000 != 0 => Some(if set { 't' } else { 'T' }),
            _ => None,
        };
        s.push(special.unwrap_or(if set { *c } else { '-' }));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_formats() {
        for t in [
            FileType::Regular,
            FileType::Dir,
            FileType::Symlink,
            FileType::Char,
            FileType::Block,
            FileType::Fifo,
            FileType::Socket,
        ] {
            assert_eq!(FileType::from_mode(t.bits() | 0o644), t);
        }
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o102644), "-rw-r-Sr--");
    }
}
