//! Container logs: one file per container (`containers/<id>/ctr.log`) in podman's
//! k8s-file format, one line per chunk of output:
//! `2026-11-21T18:00:00.123456789Z stdout F hello`. `F` ends a full line, `P` is a
//! partial line whose rest follows in later records. The monitor writes; `vessel logs`
//! reads.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{IoContext, Result};

/// Which output a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's fd 1 (and the pty, for `-t`).
    Stdout,
    /// The container's fd 2.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Appends output chunks to a log file.
pub struct LogWriter {
    file: File,
}

impl LogWriter {
    /// Opens `path` for appending (created 0600 when missing).
    ///
    /// Errors: [`crate::Error::Io`].
    pub fn open(path: &Path) -> Result<LogWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .at("open log", path)?;
        Ok(LogWriter { file })
    }

    /// Records `data` from `stream`: a record per line, the last one partial (`P`)
    /// when `data` does not end with a newline. Errors are ignored: losing log lines
    /// must not stop the container.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let now = vessel_runtime::state::now_rfc3339();
        let mut out = Vec::with_capacity(data.len() + 48);
        for piece in data.split_inclusive(|b| *b == b'\n') {
            let (text, flag) = match piece.strip_suffix(b"\n") {
                Some(t) => (t, 'F'),
                None => (piece, 'P'),
            };
            let _ = write!(out, "{now} {} {flag} ", stream.name());
            out.extend_from_slice(text);
            out.push(b'\n');
        }
        let _ = self.file.write_all(&out);
    }
}

/// How to print a log.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Only the last N lines (`--tail N`).
    pub tail: Option<usize>,
    /// Print each line's time first (`--timestamps`).
    pub timestamps: bool,
}

/// One parsed record.
struct Entry<'a> {
    time: &'a str,
    stream: Stream,
    full: bool,
    text: &'a [u8],
}

fn parse(line: &[u8]) -> Option<Entry<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let full = parts.next()? == b"F";
    Some(Entry {
        time,
        stream,
        full,
        text: parts.next().unwrap_or(b""),
    })
}

/// Prints the records of `data` to `out`/`err`; returns how many bytes were whole
/// records (the rest is an unfinished write to read again later).
fn print(data: &[u8], opts: &ReadOptions, at_line_start: &mut bool, out: &mut dyn Write, err: &mut dyn Write) -> usize {
    let mut used = 0;
    for line in data.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") {
            break;
        }
        used += line.len();
        let Some(e) = parse(line) else { continue };
        let w: &mut dyn Write = match e.stream {
            Stream::Stdout => out,
            Stream::Stderr => err,
        };
        if opts.timestamps && *at_line_start {
            let _ = write!(w, "{} ", e.time);
        }
        let _ = w.write_all(e.text);
        if e.full {
            let _ = w.write_all(b"\n");
        }
        *at_line_start = e.full;
    }
    let _ = out.flush();
    let _ = err.flush();
    used
}

/// Where `--tail n` starts: the offset of the n-th last full line's first record.
fn tail_offset(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    // Offsets where a new output line begins (the first record, and each after an F).
    let mut starts = vec![0usize];
    let mut off = 0;
    for line in data.split_inclusive(|b| *b == b'\n') {
        off += line.len();
        if parse(line).is_some_and(|e| e.full) {
            starts.push(off);
        }
    }
    if starts.last() == Some(&data.len()) {
        starts.pop();
    }
    starts.get(starts.len().saturating_sub(n)).copied().unwrap_or(0)
}

/// Prints the log at `path`. With `follow`, keeps printing what is appended until
/// `running()` turns false (checked every 100 ms), then prints the rest and returns.
///
/// Errors: [`crate::Error::Io`] when the file cannot be read (a missing file is an
/// empty log).
pub fn read(
    path: &Path,
    opts: &ReadOptions,
    follow: bool,
    running: &mut dyn FnMut() -> bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            LogWriter::open(path)?;
            File::open(path).at("open log", path)?
        }
        Err(e) => return Err(crate::Error::io("open log", path, e)),
    };
    let mut data = Vec::new();
    file.read_to_end(&mut data).at("read log", path)?;
    let start = opts.tail.map(|n| tail_offset(&data, n)).unwrap_or(0);
    let mut at_line_start = true;
    let used = print(&data[start..], opts, &mut at_line_start, out, err);
    let mut pos = (start + used) as u64;
    if !follow {
        return Ok(());
    }
    let mut reader = BufReader::new(file);
    loop {
        let alive = running();
        reader.seek(SeekFrom::Start(pos)).at("seek log", path)?;
        let mut more = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line).at("read log", path)?;
            if n == 0 || !line.ends_with(b"\n") {
                break;
            }
            more.extend_from_slice(&line);
        }
        pos += print(&more, opts, &mut at_line_start, out, err) as u64;
        if !alive {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_with_tail_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctr.log");
        let mut w = LogWriter::open(&p).unwrap();
        w.write(Stream::Stdout, b"one\ntwo\nthr");
        w.write(Stream::Stdout, b"ee\n");
        w.write(Stream::Stderr, b"oops\n");
        let (mut o, mut e) = (Vec::new(), Vec::new());
        read(&p, &ReadOptions::default(), false, &mut || false, &mut o, &mut e).unwrap();
        assert_eq!(String::from_utf8(o).unwrap(), "one\ntwo\nthree\n");
        assert_eq!(String::from_utf8(e).unwrap(), "oops\n");
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let tail = ReadOptions {
            tail: Some(2),
            timestamps: true,
        };
        read(&p, &tail, false, &mut || false, &mut o, &mut e).unwrap();
        let o = String::from_utf8(o).unwrap();
        assert!(o.ends_with("Z three\n") && !o.contains("two"), "{o:?}");
        assert_eq!(o.lines().count(), 1);
        assert_eq!(e.len(), "2026-11-21T18:00:00.123456789Z oops\n".len());
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctr.log");
        std::fs::write(&p, "junk\nT stdout F ok\n").unwrap();
        let (mut o, mut e) = (Vec::new(), Vec::new());
        read(&p, &ReadOptions::default(), false, &mut || false, &mut o, &mut e).unwrap();
        assert_eq!(o, b"ok\n");
    }
}
