//! What `fbp check --connect` tries for the components that touch the local
//! machine or open a socket of their own: files, folders, programs, bind
//! addresses, an HTTP server's TCP port. Brokers and databases have theirs
//! next to their family (`net/mqtt/probe.rs`, `storage/postgres/probe.rs`...).
//!
//! Every probe here is one attempt and changes nothing: a folder is checked
//! writable with `access(2)`, never by creating a file; a bind address is
//! bound and released at once; an HTTP server is reached with a TCP
//! connection that sends nothing (a request, even a HEAD, may do something on
//! the other side).

use std::path::{Path, PathBuf};

use fbp_runtime::spec::{BuildContext, Probe, ProbeFuture, ProbeResult};
use nix::unistd::{AccessFlags, access};

/// `file-read`.
pub(crate) const FILE_READ: Probe = Probe {
    doc: "the file exists and is readable (with `follow = true`, a missing file is waited for)",
    run: file_read,
};

/// `file-write`.
pub(crate) const FILE_WRITE: Probe = Probe {
    doc: "the file can be written, or its folder exists and can take it (no file is created)",
    run: file_write,
};

/// `sqlite`.
pub(crate) const SQLITE: Probe = Probe {
    doc: "the database file can be written, or its folder exists and can take it (no file is created)",
    run: sqlite,
};

/// `exec`.
pub(crate) const EXEC: Probe =
    Probe { doc: "the program is found in `PATH` (or at its path) and is executable; it is not run", run: exec };

/// The TCP listeners.
pub(crate) const TCP_BIND: Probe = Probe { doc: "`bind` can be bound (bound and released at once)", run: tcp_bind };

/// `udp-listen`.
pub(crate) const UDP_BIND: Probe = Probe { doc: "`bind` can be bound (bound and released at once)", run: udp_bind };

/// The HTTP and WebSocket clients.
pub(crate) const HTTP: Probe = Probe {
    doc: "the host of `url` resolves and a TCP connection opens; no request is sent (a `url` whose host is a \
          template is not checked)",
    run: http,
};

/// Runs a blocking check as a probe.
fn local(ctx: &BuildContext, check: fn(&BuildContext) -> ProbeResult) -> ProbeFuture {
    let ctx = ctx.clone();
    Box::pin(async move { check(&ctx) })
}

/// The string config key `key`, or an error naming it.
fn key<'a>(ctx: &'a BuildContext, key: &str) -> Result<&'a str, String> {
    ctx.config.get(key).and_then(|v| v.as_str()).ok_or_else(|| format!("`{key}` is not set"))
}

/// `file-read`: the file exists and is readable; with `follow = true` a
/// missing file is waited for.
fn file_read(ctx: &BuildContext) -> ProbeFuture {
    local(ctx, |ctx| {
        let path = ctx.path(key(ctx, "path")?);
        let follow = ctx.config.get("follow").and_then(|v| v.as_bool()).unwrap_or(false);
        match std::fs::File::open(&path) {
            Ok(_) if path.is_dir() => Err(format!("{}: is a folder; set `path` to a file", path.display())),
            Ok(_) => Ok(format!("{}: readable", path.display())),
            Err(e) if follow && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(format!("{}: not there yet; `follow = true` waits for it", path.display()))
            }
            Err(e) => Err(format!("{}: {e}; fix `path` or the file's permissions", path.display())),
        }
    })
}

/// `file-write`: the file can be written, or its folder exists and is writable.
fn file_write(ctx: &BuildContext) -> ProbeFuture {
    local(ctx, |ctx| writable(&ctx.path(key(ctx, "path")?), "path"))
}

/// `sqlite`: the database file can be written, or its folder can take it.
fn sqlite(ctx: &BuildContext) -> ProbeFuture {
    local(ctx, |ctx| writable(&ctx.path(key(ctx, "path")?), "path"))
}

/// Whether `path` can be written: the file itself if it is there, else its
/// folder (where it would be created). `key` names the config key to fix.
pub(crate) fn writable(path: &Path, key: &str) -> ProbeResult {
    if path.is_dir() {
        return Err(format!("{}: is a folder; set `{key}` to a file in it", path.display()));
    }
    if path.exists() {
        return access(path, AccessFlags::W_OK)
            .map(|()| format!("{}: writable", path.display()))
            .map_err(|e| format!("{}: not writable: {}; fix its permissions or `{key}`", path.display(), e.desc()));
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !folder.is_dir() {
        return Err(format!("{}: the folder does not exist; create it or fix `{key}`", folder.display()));
    }
    access(&folder, AccessFlags::W_OK | AccessFlags::X_OK)
        .map(|()| format!("{}: will be created (folder writable)", path.display()))
        .map_err(|e| {
            format!("{}: cannot create files in it: {}; fix its permissions or `{key}`", folder.display(), e.desc())
        })
}

/// `exec`: the program is found in `PATH` (or at its path) and is executable.
fn exec(ctx: &BuildContext) -> ProbeFuture {
    local(ctx, |ctx| {
        let command = key(ctx, "command")?;
        let found = program(ctx, command)?;
        access(&found, AccessFlags::X_OK)
            .map(|()| format!("{}: executable", found.display()))
            .map_err(|e| format!("{}: not executable: {}; `chmod +x` it or fix `command`", found.display(), e.desc()))
    })
}

/// Where `command` is: a path (relative to `cwd` or the flow's folder) or a name in `PATH`.
fn program(ctx: &BuildContext, command: &str) -> Result<PathBuf, String> {
    if command.contains('/') {
        let base = ctx.config.get("cwd").and_then(|v| v.as_str()).map(|c| ctx.path(c));
        let path = match base {
            Some(dir) if !Path::new(command).is_absolute() => dir.join(command),
            _ => ctx.path(command),
        };
        return match path.is_file() {
            true => Ok(path),
            false => Err(format!("{}: no such program; fix `command`", path.display())),
        };
    }
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|dir| dir.join(command))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("`{command}`: not found in PATH; install it, or give its path in `command`"))
}

/// `tcp-listen`, `http-listen`, `kv-state`: `bind` can be bound (and is released at once).
fn tcp_bind(ctx: &BuildContext) -> ProbeFuture {
    local(ctx, |ctx| bind(ctx, "tcp", |a| std::net::TcpListener::bind(a).map(drop)))
}

/// `udp-listen`: `bind` can be bound (and is released at once).
fn udp_bind(ctx: &BuildContext) -> ProbeFuture {
    local(ctx, |ctx| bind(ctx, "udp", |a| std::net::UdpSocket::bind(a).map(drop)))
}

/// Binds the `bind` address with `socket` and releases it.
fn bind(ctx: &BuildContext, proto: &str, socket: fn(&str) -> std::io::Result<()>) -> ProbeResult {
    let address = key(ctx, "bind")?;
    socket(address)
        .map(|()| format!("{proto} {address}: can be bound"))
        .map_err(|e| format!("{proto} {address}: {e}; stop what holds the port or change `bind`"))
}

/// `http-request`, `http-poll`: the host of `url` resolves and a TCP
/// connection opens; nothing is sent. A `url` with `{{ }}` holes is checked
/// only when its scheme and host are written out.
fn http(ctx: &BuildContext) -> ProbeFuture {
    let url = ctx.config.get("url").and_then(|v| v.as_str()).map(str::to_string);
    Box::pin(async move {
        let url = url.ok_or("`url` is not set")?;
        let shown = fbp_runtime::secret::url(&url);
        let per_message = || Ok(format!("the host of {shown} is filled per message; nothing to check"));
        let parsed = match url::Url::parse(&url) {
            Ok(u) => u,
            Err(_) if url.contains("{{") => return per_message(),
            Err(e) => return Err(format!("`url` {shown} is not a URL: {e}")),
        };
        let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
            return per_message();
        };
        if host.contains("{{") || host.contains("%7B%7B") {
            return per_message();
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match tokio::net::TcpStream::connect((host, port)).await {
            Ok(_) => Ok(format!("tcp {host}:{port} connects (no request sent) for {shown}")),
            Err(e) => Err(format!("tcp {host}:{port}: {e}; check the host in {shown} and that the server runs")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system's temporary folder.
    fn folder(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fbp-probe-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn ctx(config: serde_json::Value) -> BuildContext {
        BuildContext { name: "p".into(), config, base_dir: PathBuf::from("/") }
    }

    #[test]
    fn a_file_to_be_made_is_checked_by_its_folder_and_not_created() {
        let dir = folder("writable");
        let new = dir.join("new.db");
        assert!(writable(&new, "path").unwrap().contains("will be created"));
        assert!(!new.exists());
        std::fs::write(&new, "").unwrap();
        assert!(writable(&new, "path").unwrap().contains("writable"));
        assert!(writable(&dir, "path").unwrap_err().contains("is a folder"));
        let nowhere = dir.join("missing").join("x.db");
        assert!(writable(&nowhere, "path").unwrap_err().contains("does not exist"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_program_is_found_in_path_or_at_its_path() {
        let sh = program(&ctx(serde_json::json!({})), "sh").unwrap();
        assert!(sh.ends_with("sh"), "{}", sh.display());
        let missing = program(&ctx(serde_json::json!({})), "fbp-no-such-program").unwrap_err();
        assert!(missing.contains("not found in PATH"), "{missing}");
        let at = program(&ctx(serde_json::json!({})), "./no/such/tool").unwrap_err();
        assert!(at.contains("no such program"), "{at}");
    }
}
