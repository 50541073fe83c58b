//! GIF's LZW decompression (GIF89a specification, appendix F): variable-width codes read
//! LSB first, widths growing to 12 bits with no early change, and a clear code that resets the
//! table. Pillow's `GifDecode.c` reads the same streams.

/// Decodes the LZW data of one frame (its sub-blocks in order) into `out`, from the start.
/// Returns how many pixels the data held, which is less than `out.len()` for cut-short data;
/// data past `out` is ignored.
pub(super) fn lzw_decode(min_code_size: u8, blocks: &[&[u8]], out: &mut [u8]) -> Result<usize, String> {
    if !(1..=11).contains(&min_code_size) {
        return Err(format!("LZW minimum code size {min_code_size} is not 1 to 11"));
    }
    let clear = 1usize << min_code_size;
    let end = clear + 1;
    // Entry i is the string `prefix[i]`'s string + `suffix[i]`, `len[i]` long, starting with
    // `first[i]`.
    let mut prefix = [0u16; 4096];
    let mut suffix = [0u8; 4096];
    let mut first = [0u8; 4096];
    let mut len = [1u16; 4096];
    for i in 0..clear {
        (suffix[i], first[i]) = (i as u8, i as u8);
    }
    let (mut width, mut next, mut prev) = (min_code_size as u32 + 1, clear + 2, None::<usize>);
    let mut bytes = blocks.iter().flat_map(|b| b.iter().copied());
    let (mut acc, mut nbits, mut pos) = (0u32, 0u32, 0usize);
    while pos < out.len() {
        while nbits < width {
            let Some(b) = bytes.next() else {
                return Ok(pos);
            };
            acc |= (b as u32) << nbits;
            nbits += 8;
        }
        let code = (acc & ((1 << width) - 1)) as usize;
        acc >>= width;
        nbits -= width;
        if code == clear {
            (width, next, prev) = (min_code_size as u32 + 1, clear + 2, None);
            continue;
        }
        if code == end {
            break;
        }
        // The string to write: an existing code, or (the "KwKwK" case) the previous string
        // plus its own first symbol.
        let (string, extra) = match prev {
            _ if code < next => (code, None),
            Some(p) if code == next => (p, Some(first[p])),
            _ => return Err(format!("LZW code {code} is not in the table (next is {next})")),
        };
        let n = len[string] as usize;
        let mut c = string;
        for i in (0..n).rev() {
            if let Some(slot) = out.get_mut(pos + i) {
                *slot = suffix[c];
            }
            c = prefix[c] as usize;
        }
        pos += n;
        if let Some(e) = extra {
            if let Some(slot) = out.get_mut(pos) {
                *slot = e;
            }
            pos += 1;
        }
        if let (Some(p), true) = (prev, next < 4096) {
            (prefix[next], suffix[next]) = (p as u16, first[string]);
            (first[next], len[next]) = (first[p], len[p] + 1);
            next += 1;
            if next == 1 << width && width < 12 {
                width += 1;
            }
        }
        prev = Some(code);
    }
    Ok(pos.min(out.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lzw_handles_kwkwk_and_table_growth() {
        // Min code size 2 (clear 4, end 5). Codes: clear, 1, 6 (not yet in the table: the
        // KwKwK case, "1 1"), 6, 7 (= "1 1 1", added by the previous code, which filled the
        // 3-bit table so the last two codes are 4 bits), end; packed LSB first.
        let codes: [(u32, u32); 6] = [(4, 3), (1, 3), (6, 3), (6, 3), (7, 4), (5, 4)];
        let (mut acc, mut n, mut data) = (0u64, 0, Vec::new());
        for (c, w) in codes {
            acc |= (c as u64) << n;
            n += w;
        }
        while n > 0 {
            data.push(acc as u8);
            acc >>= 8;
            n = n.saturating_sub(8);
        }
        let mut out = [9u8; 12];
        let written = lzw_decode(2, &[&data], &mut out).unwrap();
        // 1 | 1 1 | 1 1 | 1 1 1
        assert_eq!(written, 8);
        assert_eq!(&out[..8], &[1; 8]);
        let err = lzw_decode(2, &[&[0b0011_1100]], &mut out).unwrap_err();
        assert!(err.contains("not in the table"), "{err}");
    }
}
