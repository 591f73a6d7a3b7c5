//! Names for code addresses: the function, and the object it lives in.
//!
//! `dladdr` knows only a library's exported (`.dynsym`) symbols, so a `static`
//! C function or a Rust function that is not exported gets the name of
//! whatever exported function precedes it, or none. Here the objects mapped
//! into the process are found with `dl_iterate_phdr`, and each one's ELF file
//! is read once: its `.symtab` (every function of an unstripped program or
//! library, local ones too), else its `.dynsym`. Rust names are demangled
//! (legacy and v0), C++ ones with libstdc++'s `__cxa_demangle` when the
//! program has it loaded.
//!
//! Reads files and allocates: never call it from a signal handler or a hook
//! that may run under the allocator.

use std::ffi::{CStr, c_void};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use super::Guard;

const STT_FUNC: u8 = 2;
pub(crate) const SHT_SYMTAB: u32 = 2;
pub(crate) const SHT_DYNSYM: u32 = 11;

/// What is known of a code address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Symbol {
    /// The function, demangled; empty when the object has no symbol covering
    /// the address (a stripped library's internal function, the vDSO).
    pub(crate) name: String,
    /// From the function's start; from the object's load address when `name`
    /// is empty.
    pub(crate) offset: usize,
    /// The object's path (the program's own, not `""`).
    pub(crate) object: Arc<str>,
}

/// A start routine's name for reports: its symbol (static functions of an
/// unstripped object included), else `object+0xoffset`, else the address.
pub(crate) fn routine_name(addr: usize) -> String {
    match describe(addr) {
        Some(s) if !s.name.is_empty() => s.name,
        Some(s) => format!("{}+{:#x}", s.object, s.offset),
        None => format!("{addr:#x}"),
    }
}

/// The function at `addr` and its object; None if no loaded object maps it.
pub(crate) fn describe(addr: usize) -> Option<Symbol> {
    let (bias, name, extent) = object_at(addr)?;
    // Our own reads of the ELF file must go straight to libc, even when the
    // caller is a coroutine (they must not park or be offloaded).
    let _guard = Guard::enter();
    let mut cache = OBJECTS.lock().unwrap_or_else(|e| e.into_inner());
    let i = match cache.iter().position(|o| o.bias == bias && o.name == name) {
        Some(i) => i,
        None => {
            cache.push(Object::load(bias, name, extent));
            cache.len() - 1
        }
    };
    let object = &cache[i];
    let offset = addr.wrapping_sub(bias);
    Some(match object.function_at(offset) {
        Some((start, name)) => Symbol {
            name: demangle(name),
            offset: offset - start,
            object: object.path.clone(),
        },
        None => Symbol {
            name: String::new(),
            offset,
            object: object.path.clone(),
        },
    })
}

/// Objects whose symbols were read, in the order first asked about.
static OBJECTS: Mutex<Vec<Object>> = Mutex::new(Vec::new());

struct Object {
    /// Load bias (`dlpi_addr`) and the loader's name for it: its identity.
    bias: usize,
    name: Vec<u8>,
    path: Arc<str>,
    /// The ELF image the names are read from, kept mapped: copying every
    /// name out of a large program took long enough to miss a hold's end.
    image: Option<Image>,
    /// (start, size, name's offset in `image`, name's length) of every
    /// function, by start.
    functions: Vec<(usize, usize, usize, usize)>,
}

enum Image {
    File(Mapped),
    /// The vDSO, mapped by the kernel for the process's life.
    Memory(&'static [u8]),
}

impl Image {
    fn bytes(&self) -> &[u8] {
        match self {
            Image::File(m) => m.bytes(),
            Image::Memory(b) => b,
        }
    }
}

impl Object {
    /// `extent`: the end of its last loaded segment, from `bias`.
    fn load(bias: usize, name: Vec<u8>, extent: usize) -> Object {
        // The program's own entry has an empty name.
        let path: Arc<str> = if name.is_empty() {
            std::fs::read_link("/proc/self/exe")
                .map_or_else(|_| "/proc/self/exe".into(), |p| p.to_string_lossy().into())
        } else {
            String::from_utf8_lossy(&name).into()
        };
        let image = match Mapped::open(&path) {
            Some(file) => Some(Image::File(file)),
            // The vDSO has no file: the kernel maps its whole image, section
            // headers included (clock_gettime's frames end there), past its
            // segment but in the same pages.
            None if name.starts_with(b"linux-vdso") => {
                let page = crate::sys::page_size();
                let mapped = extent.div_ceil(page) * page;
                // SAFETY: the loader reports `extent` bytes loaded at `bias`,
                // a mapping spans whole pages, and the vDSO is never unmapped.
                Some(Image::Memory(unsafe {
                    std::slice::from_raw_parts(bias as *const u8, mapped)
                }))
            }
            None => None,
        };
        let mut functions = image
            .as_ref()
            .and_then(|image| {
                let bytes = image.bytes();
                let base = bytes.as_ptr() as usize;
                let symbols = symbols(bytes, SHT_SYMTAB).or_else(|| symbols(bytes, SHT_DYNSYM))?;
                Some(
                    symbols
                        .into_iter()
                        .map(|(start, size, name)| {
                            (start, size, name.as_ptr() as usize - base, name.len())
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .unwrap_or_default();
        // Of aliases at one address the first kept wins; sized ones first, so
        // that a size bounds the lookup where one is known.
        functions.sort_unstable_by_key(|&(start, size, _, _)| (start, size == 0));
        functions.dedup_by_key(|f| f.0);
        Object {
            bias,
            name,
            path,
            image,
            functions,
        }
    }

    /// The function covering `offset`: the last starting at or before it,
    /// unless its size says it ends before `offset`.
    fn function_at(&self, offset: usize) -> Option<(usize, &[u8])> {
        let after = self.functions.partition_point(|f| f.0 <= offset);
        let &(start, size, at, len) = self.functions.get(after.checked_sub(1)?)?;
        let name = self.image.as_ref()?.bytes().get(at..at + len)?;
        (size == 0 || offset < start + size).then_some((start, name))
    }
}

/// The load bias, loader's name and extent (the end of its last loaded
/// segment, from the bias) of the object with a loaded segment at `addr`.
fn object_at(addr: usize) -> Option<(usize, Vec<u8>, usize)> {
    struct Search {
        addr: usize,
        found: Option<(usize, Vec<u8>, usize)>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the duration of the
        // call, and `data` is our `Search`.
        let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
        let bias = info.dlpi_addr as usize;
        let headers: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: `dlpi_phnum` program headers at `dlpi_phdr`.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) }
        };
        let inside = headers.iter().any(|h| {
            let start = bias.wrapping_add(h.p_vaddr as usize);
            h.p_type == libc::PT_LOAD && (start..start + h.p_memsz as usize).contains(&search.addr)
        });
        if !inside {
            return 0;
        }
        let name = if info.dlpi_name.is_null() {
            Vec::new()
        } else {
            // SAFETY: a NUL-terminated name owned by the loader.
            unsafe { CStr::from_ptr(info.dlpi_name) }
                .to_bytes()
                .to_vec()
        };
        let extent = headers
            .iter()
            .filter(|h| h.p_type == libc::PT_LOAD)
            .map(|h| (h.p_vaddr + h.p_memsz) as usize)
            .max()
            .unwrap_or(0);
        search.found = Some((bias, name, extent));
        1
    }
    let mut search = Search { addr, found: None };
    // SAFETY: `visit` matches the callback type and only uses `search` while
    // dl_iterate_phdr runs.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut search).cast()) };
    search.found
}

/// A readable name: Rust names demangled without their hash, C++ ones through
/// `__cxa_demangle` if libstdc++ is loaded, anything else as it is.
fn demangle(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    if let Ok(d) = rustc_demangle::try_demangle(&text) {
        return format!("{d:#}");
    }
    if name.starts_with(b"_Z") {
        if let Some(d) = cxa_demangle(name) {
            return d;
        }
    }
    text.into_owned()
}

fn cxa_demangle(name: &[u8]) -> Option<String> {
    type Demangle = unsafe extern "C" fn(
        *const libc::c_char,
        *mut libc::c_char,
        *mut libc::size_t,
        *mut libc::c_int,
    ) -> *mut libc::c_char;
    // SAFETY: a NUL-terminated name; dlsym has no other preconditions.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__cxa_demangle".as_ptr()) };
    if f.is_null() {
        return None;
    }
    // SAFETY: libstdc++'s __cxa_demangle has this signature.
    let f = unsafe { std::mem::transmute::<*mut c_void, Demangle>(f) };
    let mut owned = name.to_vec();
    owned.push(0);
    let mut status = 0;
    // SAFETY: a NUL-terminated name; a null buffer asks it to malloc the result.
    let out = unsafe {
        f(
            owned.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut status,
        )
    };
    if out.is_null() {
        return None;
    }
    // SAFETY: on success a NUL-terminated malloc'd string, freed once here.
    let text = unsafe { CStr::from_ptr(out) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: malloc'd by __cxa_demangle.
    unsafe { libc::free(out.cast()) };
    (status == 0).then_some(text)
}

/// A whole file mapped read-only.
pub(crate) struct Mapped {
    addr: *mut c_void,
    len: usize,
}

impl Mapped {
    pub(crate) fn open(path: &str) -> Option<Mapped> {
        let file = File::open(path).ok()?;
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: a private read-only mapping of a file we opened.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        (addr != libc::MAP_FAILED).then_some(Mapped { addr, len })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for our lifetime.
        unsafe { std::slice::from_raw_parts(self.addr.cast(), self.len) }
    }
}

// SAFETY: a private read-only mapping, owned, never written: any thread may
// read it and unmap it once.
unsafe impl Send for Mapped {}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// The N bytes at `base + off`, if the file has them.
fn read<const N: usize>(b: &[u8], base: usize, off: usize) -> Option<[u8; N]> {
    let at = base.checked_add(off)?;
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u16_at(b: &[u8], base: usize, off: usize) -> Option<usize> {
    read(b, base, off).map(|x| u16::from_le_bytes(x).into())
}

fn u32_at(b: &[u8], base: usize, off: usize) -> Option<usize> {
    read(b, base, off).and_then(|x| usize::try_from(u32::from_le_bytes(x)).ok())
}

fn u64_at(b: &[u8], base: usize, off: usize) -> Option<usize> {
    read(b, base, off).and_then(|x| usize::try_from(u64::from_le_bytes(x)).ok())
}

/// (value, size, name) of every function in the first section of type `kind`
/// (`SHT_SYMTAB`, `SHT_DYNSYM`) of a 64-bit little-endian ELF file; None if
/// there is no such section (or the file is not such an ELF). Every offset is
/// bounds-checked: a damaged file yields fewer symbols, never a crash.
pub(crate) fn symbols(elf: &[u8], kind: u32) -> Option<Vec<(usize, usize, &[u8])>> {
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (shoff, shentsize, shnum) = (
        u64_at(elf, 0, 0x28)?,
        u16_at(elf, 0, 0x3a)?,
        u16_at(elf, 0, 0x3c)?,
    );
    let section = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let table = (0..shnum).find_map(|i| {
        let at = section(i)?;
        (u32_at(elf, at, 4)? == kind as usize).then_some(at)
    })?;
    let (off, size, link, entsize) = (
        u64_at(elf, table, 0x18)?,
        u64_at(elf, table, 0x20)?,
        u32_at(elf, table, 0x28)?,
        u64_at(elf, table, 0x38)?,
    );
    let strtab = section(link)?;
    let (str_off, str_size) = (u64_at(elf, strtab, 0x18)?, u64_at(elf, strtab, 0x20)?);
    let strings = elf.get(str_off..str_off.checked_add(str_size)?)?;
    let syms = elf.get(off..off.checked_add(size)?)?;
    if entsize < 24 {
        return None;
    }
    let mut out = Vec::new();
    for sym in syms.chunks_exact(entsize) {
        let (Some(name), Some(value), Some(size)) =
            (u32_at(sym, 0, 0), u64_at(sym, 0, 8), u64_at(sym, 0, 16))
        else {
            continue;
        };
        if sym[4] & 0xf != STT_FUNC || value == 0 {
            continue;
        }
        let Some(rest) = strings.get(name..) else {
            continue;
        };
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        out.push((value, size, &rest[..end]));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Local to this file: in `.symtab` only, never exported.
    #[inline(never)]
    fn a_local_function() -> usize {
        std::hint::black_box(a_local_function as *const () as usize)
    }

    #[test]
    fn local_functions_are_named_from_the_symbol_table() {
        let addr = a_local_function();
        let sym = describe(addr + 1).expect("this test binary maps it");
        assert!(
            sym.name.ends_with("symbolize::tests::a_local_function"),
            "{sym:?}"
        );
        assert_eq!(sym.offset, 1);
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(&*sym.object, exe.to_str().unwrap());
    }

    #[test]
    fn library_functions_are_named_too() {
        let addr = libc::getpid as *const () as usize;
        let sym = describe(addr).expect("libc is mapped");
        assert!(sym.object.contains("libc.so"), "{sym:?}");
        assert!(sym.name.contains("getpid"), "{sym:?}");
    }

    #[test]
    fn the_vdso_is_named_from_memory() {
        // SAFETY: getauxval has no preconditions.
        let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
        assert_ne!(vdso, 0, "this kernel maps a vDSO");
        let named = (0..8192)
            .step_by(16)
            .filter_map(|off| describe(vdso + off))
            .find(|s| s.name.contains("clock_gettime"));
        assert!(
            named.is_some_and(|s| s.object.starts_with("linux-vdso")),
            "no vDSO function named"
        );
    }

    #[test]
    fn unmapped_addresses_have_no_object() {
        assert_eq!(describe(8), None);
    }

    #[test]
    fn damaged_files_give_no_symbols() {
        let file = Mapped::open("/proc/self/exe").unwrap();
        assert!(symbols(file.bytes(), SHT_SYMTAB).is_some());
        let head = &file.bytes()[..64];
        assert!(symbols(head, SHT_SYMTAB).is_none());
        assert!(symbols(b"\x7fELF\x02\x01", SHT_SYMTAB).is_none());
        assert!(symbols(b"not an elf", SHT_DYNSYM).is_none());
    }
}
