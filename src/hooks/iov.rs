//! iovec arithmetic shared by the vectored calls.

use libc::{c_int, iovec};

/// Linux's limit on iovecs per call (`UIO_MAXIOV`).
const IOV_MAX: c_int = 1024;

pub(crate) fn msghdr_for(iov: *const iovec, iovcnt: c_int) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.cast_mut();
    msg.msg_iovlen = iovcnt.max(0) as _;
    msg
}

pub(crate) fn iov_total(iov: *const iovec, iovcnt: c_int) -> Option<usize> {
    if iov.is_null() || !(0..=IOV_MAX).contains(&iovcnt) {
        return None;
    }
    // SAFETY: the caller promises `iovcnt` valid iovecs at `iov`.
    let parts = unsafe { std::slice::from_raw_parts(iov, iovcnt as usize) };
    parts
        .iter()
        .try_fold(0usize, |acc, v| acc.checked_add(v.iov_len))
}

/// The not-yet-written tail of an iovec array, as a fresh array (the caller's
/// stays untouched, as with the real call).
pub(crate) struct IovCursor {
    orig: *const iovec,
    count: usize,
    tail: Vec<iovec>,
}

impl IovCursor {
    pub(crate) fn new(orig: *const iovec, count: c_int) -> IovCursor {
        IovCursor {
            orig,
            count: count as usize,
            tail: Vec::new(),
        }
    }

    /// The iovecs from byte `offset` on, at most `cap` bytes in all.
    pub(crate) fn tail_at(&mut self, mut offset: usize, cap: usize) -> (*const iovec, c_int) {
        if offset == 0 && cap == usize::MAX {
            return (self.orig, self.count as c_int);
        }
        // SAFETY: `orig` holds `count` valid iovecs (checked by `iov_total`).
        let parts = unsafe { std::slice::from_raw_parts(self.orig, self.count) };
        self.tail.clear();
        let mut budget = cap;
        for v in parts {
            if offset >= v.iov_len {
                offset -= v.iov_len;
                continue;
            }
            if budget == 0 {
                break;
            }
            let len = (v.iov_len - offset).min(budget);
            self.tail.push(iovec {
                // SAFETY: `offset < iov_len`, inside the caller's buffer.
                iov_base: unsafe { v.iov_base.cast::<u8>().add(offset) }.cast(),
                iov_len: len,
            });
            budget -= len;
            offset = 0;
        }
        (self.tail.as_ptr(), self.tail.len() as c_int)
    }
}
