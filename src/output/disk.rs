//! GPT disk assembly.

/// Partition type GUIDs by Discoverable Partitions Specification name, or a GUID as given.
pub fn partition_type(name: &str) -> Result<&'static str, String> {
    Ok(match name {
        "root" | "root-x86-64" => "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        "esp" => "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
        "linux-generic" => "0fc63daf-8483-4772-8e79-3d69d8477de4",
        "var" => "4d21b016-b534-45c2-a9fb-5c16e091fd2d",
        "tmp" => "7ec6f557-3bc5-4aca-b293-16ef5df639d1",
        "home" => "933ac7e1-2eb4-4f13-b844-0e14e2aef915",
        "srv" => "3b8f8425-20e0-4f3b-907f-1a25a76f98e8",
        "swap" => "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f",
        other => {
            return Err(format!(
            "partition type `{other}`: use root, esp, linux-generic, var, tmp, home, srv or swap"
        ))
        }
    })
}
