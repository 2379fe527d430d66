//! The serial devices: the console on the first UART, and the status channel the guest
//! reports its exit status on (a second UART, which every x86 kernel has built in, and a
//! virtio-serial port named `org.kiln.status` where the kernel has virtio_console).

use std::path::PathBuf;

/// Where the console goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Console {
    /// The serial console on the terminal (Ctrl-A X quits).
    Interactive,
    /// The serial console into a log file.
    LogFile(PathBuf),
}

/// The name of the virtio-serial port the guest writes its status to.
pub const STATUS_PORT: &str = "org.kiln.status";

impl Console {
    /// The `-serial` arguments (and the chardev behind them) for ttyS0.
    pub fn args(&self) -> Vec<String> {
        match self {
            Console::Interactive => vec!["-serial".into(), "mon:stdio".into()],
            Console::LogFile(p) => vec![
                "-chardev".into(),
                format!("file,id=console,path={}", super::qemu::option_path(p)),
                "-serial".into(),
                "chardev:console".into(),
            ],
        }
    }
}

/// The status channel's files on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChannel {
    /// What the guest writes to ttyS1.
    pub uart: PathBuf,
    /// What the guest writes to the virtio-serial port.
    pub virtio: PathBuf,
}

impl StatusChannel {
    /// ttyS1 into `uart`, and the virtio-serial port into `virtio`. Must come after the
    /// console's arguments so the UARTs are numbered console first.
    pub fn args(&self) -> Vec<String> {
        vec![
            "-chardev".into(),
            format!(
                "file,id=kiln-status,path={}",
                super::qemu::option_path(&self.uart)
            ),
            "-serial".into(),
            "chardev:kiln-status".into(),
            "-device".into(),
            "virtio-serial-pci,id=kiln-vs".into(),
            "-chardev".into(),
            format!(
                "file,id=kiln-status-vport,path={}",
                super::qemu::option_path(&self.virtio)
            ),
            "-device".into(),
            format!("virtserialport,bus=kiln-vs.0,chardev=kiln-status-vport,name={STATUS_PORT}"),
        ]
    }
}
