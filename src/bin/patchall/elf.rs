//! Just enough ELF to tell whether the dynamic loader will start a program, and
//! so whether `LD_PRELOAD` can take effect: the program headers' `PT_INTERP` and
//! `PT_DYNAMIC`, the class and the machine. 32- and 64-bit, either byte order.
//! Tested through the launcher's refusals (`tests/launcher.rs`): the binary has
//! no unit-test harness.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
/// `e_phnum` value meaning "the count is in section header 0's `sh_info`".
const PN_XNUM: u16 = 0xffff;
/// More program headers than any real program has: a corrupt count.
const MAX_PHNUM: u32 = 1 << 20;

/// What a file is, as far as the launcher cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Image {
    Elf(Elf),
    /// Starts with `#!`: its interpreter decides (patchall does not look further).
    Script,
    /// Neither ELF nor script: `execve` decides (execvp hands it to `/bin/sh`).
    Other,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Elf {
    /// 32 or 64.
    pub bits: u8,
    /// `e_machine` (62: x86-64, 183: AArch64, 3: i386…).
    pub machine: u16,
    /// Has `PT_INTERP`: the kernel starts the dynamic loader, which honours
    /// `LD_PRELOAD`. Without it the kernel jumps straight into the program.
    pub interp: bool,
    /// Has `PT_DYNAMIC` (without `PT_INTERP`: a static-pie, or a shared library).
    pub dynamic: bool,
}

/// Reads the file's header and program headers. A truncated or inconsistent ELF
/// file gives `InvalidData`.
pub fn inspect(path: &Path) -> io::Result<Image> {
    let file = File::open(path)?;
    let mut ident = [0u8; 16];
    match file.read_exact_at(&mut ident, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(if ident.starts_with(b"#!") {
                Image::Script
            } else {
                Image::Other
            });
        }
        Err(e) => return Err(e),
    }
    if ident.starts_with(b"#!") {
        return Ok(Image::Script);
    }
    if !ident.starts_with(b"\x7fELF") {
        return Ok(Image::Other);
    }
    let r = Reader {
        file: &file,
        big_endian: match ident[5] {
            1 => false,
            2 => true,
            _ => return Err(malformed("unknown byte order")),
        },
    };
    // Offsets of e_phoff, e_shoff, e_phentsize, e_phnum and section header 0's
    // sh_info, which differ between the classes; e_machine does not.
    let (bits, phoff, shoff, phentsize, phnum, sh_info) = match ident[4] {
        1 => (32, r.u32(28)? as u64, r.u32(32)? as u64, 42, 44, 28),
        2 => (64, r.u64(32)?, r.u64(40)?, 54, 56, 44),
        _ => return Err(malformed("unknown class")),
    };
    let phentsize = u64::from(r.u16(phentsize)?);
    let mut phnum = u32::from(r.u16(phnum)?);
    if phnum == u32::from(PN_XNUM) {
        phnum = r.u32(shoff + sh_info)?;
    }
    if phnum > MAX_PHNUM {
        return Err(malformed("too many program headers"));
    }
    if phnum > 0 && phentsize < 4 {
        return Err(malformed("program header entries too small"));
    }
    let mut elf = Elf {
        bits,
        machine: r.u16(18)?,
        interp: false,
        dynamic: false,
    };
    for i in 0..u64::from(phnum) {
        let at = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or_else(|| malformed("program headers out of range"))?;
        match r.u32(at)? {
            PT_INTERP => elf.interp = true,
            PT_DYNAMIC => elf.dynamic = true,
            _ => {}
        }
    }
    Ok(Image::Elf(elf))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed ELF: {what}"))
}

struct Reader<'a> {
    file: &'a File,
    big_endian: bool,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, at: u64) -> io::Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.file.read_exact_at(&mut buf, at).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                malformed("truncated")
            } else {
                e
            }
        })?;
        if self.big_endian {
            buf.reverse();
        }
        Ok(buf)
    }

    fn u16(&self, at: u64) -> io::Result<u16> {
        self.bytes(at).map(u16::from_le_bytes)
    }

    fn u32(&self, at: u64) -> io::Result<u32> {
        self.bytes(at).map(u32::from_le_bytes)
    }

    fn u64(&self, at: u64) -> io::Result<u64> {
        self.bytes(at).map(u64::from_le_bytes)
    }
}
