//! Just enough ELF to tell whether the dynamic loader will start a program, and
//! so whether `LD_PRELOAD` can take effect: the program headers' `PT_INTERP` and
//! `PT_DYNAMIC`, the type, the class and the machine; and the symbols an object
//! defines or imports (`.dynsym`). 32- and 64-bit, either byte order.
//! Tested through the launcher's refusals (`tests/launcher.rs`): the binary has
//! no unit-test harness.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const ET_REL: u16 = 1;
pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;
/// A symbol every libpatchall.so defines (the C API's).
pub const MARKER: &str = "pa_spawn";
const SHT_DYNSYM: u32 = 11;
/// More bytes of symbols or names than any real library has: a corrupt size.
const MAX_TABLE: u64 = 256 << 20;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
/// `e_phnum` value meaning "the count is in section header 0's `sh_info`".
const PN_XNUM: u16 = 0xffff;
/// Longer than any path: a corrupt `PT_INTERP`.
const MAX_INTERP: u64 = 4096;
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
    /// `e_type`: ET_EXEC, ET_DYN (a shared library or a PIE), ET_REL…
    pub kind: u16,
    /// 32 or 64.
    pub bits: u8,
    /// `e_machine` (62: x86-64, 183: AArch64, 3: i386…).
    pub machine: u16,
    /// `PT_INTERP`'s path: the kernel starts this dynamic loader, which honours
    /// `LD_PRELOAD`. Without it the kernel jumps straight into the program.
    pub interp: Option<PathBuf>,
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
    // A program header's p_offset and p_filesz.
    let segment = |at: u64| -> io::Result<(u64, u64)> {
        if bits == 64 {
            Ok((r.u64(at + 8)?, r.u64(at + 32)?))
        } else {
            Ok((r.u32(at + 4)?.into(), r.u32(at + 16)?.into()))
        }
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
        kind: r.u16(16)?,
        bits,
        machine: r.u16(18)?,
        interp: None,
        dynamic: false,
    };
    for i in 0..u64::from(phnum) {
        let at = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or_else(|| malformed("program headers out of range"))?;
        match r.u32(at)? {
            PT_INTERP => {
                let (offset, size) = segment(at)?;
                if size > MAX_INTERP {
                    return Err(malformed("interpreter path too long"));
                }
                let path = r.vec(offset, size)?;
                let path = path.split(|&b| b == 0).next().unwrap_or_default();
                elf.interp = Some(PathBuf::from(OsStr::from_bytes(path)));
            }
            PT_DYNAMIC => elf.dynamic = true,
            _ => {}
        }
    }
    Ok(Image::Elf(elf))
}

/// True if the ELF file at `path` defines `name` in its dynamic symbol table
/// (the one the loader resolves against). False for a file without one.
pub fn defines(path: &Path, name: &str) -> io::Result<bool> {
    Ok(dynamic_symbols(path)?
        .iter()
        .any(|(n, defined)| *defined && n == name.as_bytes()))
}

/// The names in the dynamic symbol table (`.dynsym`) of the ELF file at
/// `path`, each with whether the file defines it (else it imports it: the
/// loader binds it to the first object in its search order that defines it, an
/// `LD_PRELOAD`ed library first). Empty for a file without one.
pub fn dynamic_symbols(path: &Path) -> io::Result<Vec<(Vec<u8>, bool)>> {
    let file = File::open(path)?;
    let mut ident = [0u8; 16];
    file.read_exact_at(&mut ident, 0)?;
    let r = Reader {
        file: &file,
        big_endian: ident[5] == 2,
    };
    // Per class: e_shoff, e_shentsize, e_shnum; the section header's sh_type,
    // sh_offset, sh_size, sh_link; the symbol's size, st_name and st_shndx.
    let wide = ident[4] == 2;
    let (shoff, shentsize, shnum) = if wide {
        (r.u64(40)?, r.u16(58)?, r.u16(60)?)
    } else {
        (u64::from(r.u32(32)?), r.u16(46)?, r.u16(48)?)
    };
    let section = |i: u64| -> io::Result<(u32, u64, u64, u32)> {
        let at = shoff + i * u64::from(shentsize);
        Ok(if wide {
            (
                r.u32(at + 4)?,
                r.u64(at + 24)?,
                r.u64(at + 32)?,
                r.u32(at + 40)?,
            )
        } else {
            let (off, size) = (r.u32(at + 16)?, r.u32(at + 20)?);
            (r.u32(at + 4)?, off.into(), size.into(), r.u32(at + 24)?)
        })
    };
    let (symsize, shndx) = if wide { (24, 6) } else { (16, 14) };
    let mut symbols = Vec::new();
    for i in 0..u64::from(shnum) {
        let (kind, offset, size, link) = section(i)?;
        if kind != SHT_DYNSYM {
            continue;
        }
        let (_, str_offset, str_size, _) = section(link.into())?;
        if size > MAX_TABLE || str_size > MAX_TABLE {
            return Err(malformed("symbol table too large"));
        }
        let names = r.vec(str_offset, str_size)?;
        let table = r.vec(offset, size)?;
        let field = |at: usize, len: usize| {
            let bytes = &table[at..at + len];
            let mut value = 0u64;
            for i in 0..len {
                let b = if r.big_endian {
                    bytes[i]
                } else {
                    bytes[len - 1 - i]
                };
                value = value << 8 | u64::from(b);
            }
            value
        };
        // Symbol 0 is the null symbol.
        for sym in 1..size as usize / symsize {
            let at = sym * symsize;
            let (st_name, st_shndx) = (field(at, 4) as usize, field(at + shndx, 2));
            let Some(name) = names
                .get(st_name..)
                .and_then(|rest| rest.split(|&b| b == 0).next())
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            // Section index 0 (SHN_UNDEF): a reference, not a definition.
            symbols.push((name.to_vec(), st_shndx != 0));
        }
    }
    Ok(symbols)
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed ELF: {what}"))
}

struct Reader<'a> {
    file: &'a File,
    big_endian: bool,
}

impl Reader<'_> {
    /// Fills `buf` from `at`; a short file is malformed.
    fn read(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, at).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                malformed("truncated")
            } else {
                e
            }
        })
    }

    fn bytes<const N: usize>(&self, at: u64) -> io::Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.read(&mut buf, at)?;
        if self.big_endian {
            buf.reverse();
        }
        Ok(buf)
    }

    /// `len` bytes from `at`, as they are in the file.
    fn vec(&self, at: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.read(&mut buf, at)?;
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
