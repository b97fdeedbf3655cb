"""Read one object from an installed R package's lazy-load data base (data/Rdata.rdb +
Rdata.rdx), as Debian's r-cran-* packages ship them, without R: the index is a gzip'd
serialised list of (offset, length) per object; each entry is a 4-byte length, a
compression tag and the compressed serialised object (tag 'Z': raw LZMA2)."""
from __future__ import annotations

import gzip
import lzma
import zlib
from pathlib import Path

from prge.whitespace import shown_names, shown_value


def read_lazyload_object(data_dir: str | Path, name: str):
    import warnings

    import rdata

    # rdata warns about R classes (tbl_df) it maps to data.frame, and about the headerless
    # serialisation format of lazy-load entries; both are expected here.
    warnings.filterwarnings("ignore", module="rdata")

    data_dir = Path(data_dir)
    index_path, db_path = data_dir / "Rdata.rdx", data_dir / "Rdata.rdb"
    for path in (index_path, db_path):
        if not path.is_file():
            raise FileNotFoundError(f"R lazy-load data base not found: {path}")
    index = rdata.conversion.convert(
        rdata.parser.parse_data(gzip.decompress(index_path.read_bytes())))
    variables = index["variables"]
    if name not in variables:
        raise KeyError(f"{db_path}: no object {shown_value(name)} (has: {shown_names(variables)})")
    offset, length = (int(x) for x in variables[name])
    with open(db_path, "rb") as f:
        f.seek(offset)
        blob = f.read(length)
    tag, payload = blob[4:5], blob[5:]
    if tag == b"Z":
        raw = lzma.LZMADecompressor(
            format=lzma.FORMAT_RAW,
            filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]).decompress(payload)
    elif tag == b"2":
        import bz2
        raw = bz2.decompress(payload)
    elif tag == b"0":
        raw = payload
    else:  # zlib: no tag byte, the stream starts right after the length
        raw = zlib.decompress(blob[4:])
    return rdata.conversion.convert(rdata.parser.parse_data(raw))
