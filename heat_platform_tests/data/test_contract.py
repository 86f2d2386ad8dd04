"""read_batch: every way a file can be unreadable gives a specific kind and message."""

from __future__ import annotations

import os

import polars as pl
import pytest

from heat_platform.data.contract import BatchReadError, read_batch
from heat_platform_tests.data.conftest import clean_frame


def read_error(path, **kwargs) -> BatchReadError:
    with pytest.raises(BatchReadError) as info:
        read_batch(path, **kwargs)
    return info.value


def test_clean_parquet_and_csv_read_the_same_rows(tmp_path):
    frame = clean_frame(20)
    frame.write_parquet(tmp_path / "b.parquet")
    frame.write_csv(tmp_path / "b.csv")
    parquet = read_batch(tmp_path / "b.parquet")
    csv = read_batch(tmp_path / "b.csv")
    assert parquet.n_rows == csv.n_rows == 20
    assert parquet.frame.get_column("row").to_list() == list(range(1, 21))
    assert csv.frame.schema["u"] == pl.String  # CSV numbers are parsed row by row later
    assert parquet.warnings == [] and csv.format == "csv"


def test_zero_byte_file(write_text):
    error = read_error(write_text("b.csv", ""))
    assert error.kind == "zero_bytes"
    assert "0 bytes" in error.message


def test_empty_csv_with_only_blank_lines(write_text):
    error = read_error(write_text("b.csv", "\n\n"))
    assert error.kind == "empty"
    assert "no header and no rows" in error.message


def test_csv_with_header_only(write_text):
    error = read_error(write_text("b.csv", "x,y,t,u\n"))
    assert error.kind == "no_rows"
    assert "no data rows" in error.message and "header only" in error.message


def test_parquet_with_zero_rows(tmp_path):
    clean_frame(5).head(0).write_parquet(tmp_path / "b.parquet")
    assert read_error(tmp_path / "b.parquet").kind == "no_rows"


def test_truncated_parquet(tmp_path):
    clean_frame(50).write_parquet(tmp_path / "full.parquet")
    data = (tmp_path / "full.parquet").read_bytes()
    (tmp_path / "b.parquet").write_bytes(data[: len(data) // 2])
    error = read_error(tmp_path / "b.parquet")
    assert error.kind == "corrupt"
    assert "truncated or corrupt" in error.message and "PAR1" in error.message


def test_corrupt_parquet_footer(tmp_path):
    clean_frame(50).write_parquet(tmp_path / "b.parquet", compression="uncompressed")
    data = bytearray((tmp_path / "b.parquet").read_bytes())
    footer_length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - footer_length
    data[start : start + 40] = os.urandom(40)  # garbage thrift metadata, magic bytes intact
    (tmp_path / "b.parquet").write_bytes(bytes(data))
    error = read_error(tmp_path / "b.parquet")
    assert error.kind == "corrupt"
    assert "corrupt Parquet file" in error.message


def test_text_named_parquet(write_text):
    error = read_error(write_text("b.parquet", "x,y,t,u\n1,2,3,4\n"))
    assert error.kind == "corrupt"
    assert "is it a CSV?" in error.message


def test_parquet_named_csv(tmp_path):
    clean_frame(5).write_parquet(tmp_path / "b.csv")
    error = read_error(tmp_path / "b.csv")
    assert error.kind == "wrong_format"
    assert "is a Parquet file" in error.message


def test_missing_column_suggests_the_close_match(write_text):
    error = read_error(write_text("b.csv", "x,y,t,temp\n1,2,3,4\n"))
    assert error.kind == "columns"
    assert "missing required column(s) 'u'" in error.message
    assert "found 'x', 'y', 't', 'temp'" in error.message
    assert "'temp' -> 'u'" in error.message


def test_wrong_case_and_time_alias_are_suggested(write_text):
    error = read_error(write_text("b.csv", "X,y,time,u\n1,2,3,4\n"))
    assert "'x', 't'" in error.message
    assert "'X' -> 'x'" in error.message and "'time' -> 't'" in error.message


def test_semicolon_separated_csv_is_explained(write_text):
    error = read_error(write_text("b.csv", "x;y;t;u\n1;2;3;4\n"))
    assert error.kind == "columns"
    assert "';' or tab separated" in error.message


def test_duplicated_column_names(write_text):
    error = read_error(write_text("b.csv", "x,y,t,u,u\n1,2,3,4,5\n"))
    assert error.kind == "columns"
    assert "'u' appear more than once" in error.message


def test_unusable_column_types(tmp_path):
    frame = pl.DataFrame({"x": [1.0], "y": [1.0], "t": [True], "u": [[1.0]], "sensor_id": [1.5]})
    frame.write_parquet(tmp_path / "b.parquet")
    error = read_error(tmp_path / "b.parquet")
    assert error.kind == "column_type"
    assert "'t' is Boolean (must be a number)" in error.message
    assert "'u' is List(Float64)" in error.message
    assert "'sensor_id' is Float64 (must be text or an integer)" in error.message


def test_extra_columns_are_reported_with_hints(tmp_path):
    clean_frame(5).drop("sensor_id").with_columns(
        pl.lit("a").alias("sensor"), pl.lit(1).alias("lab_note")
    ).write_parquet(tmp_path / "b.parquet")
    raw = read_batch(tmp_path / "b.parquet")
    assert raw.ignored_columns == ["sensor", "lab_note"]
    assert (
        "column 'sensor' is not part of the contract and is not used (did you mean 'sensor_id'?)"
        in raw.warnings
    )
    assert "sensor" not in raw.frame.columns


def test_file_over_the_size_limit(tmp_path):
    clean_frame(100).write_parquet(tmp_path / "b.parquet")
    size = (tmp_path / "b.parquet").stat().st_size
    error = read_error(tmp_path / "b.parquet", max_file_bytes=1024)
    assert error.kind == "too_large"
    assert "above the limit of 1.0 KiB" in error.message and "split it" in error.message
    assert read_batch(tmp_path / "b.parquet", max_file_bytes=size).n_rows == 100


def test_too_many_rows_is_refused_before_loading(tmp_path):
    clean_frame(100).write_csv(tmp_path / "b.csv")
    error = read_error(tmp_path / "b.csv", max_rows=99)
    assert error.kind == "too_large"
    assert "has 100 rows, above the limit of 99 rows" in error.message


def test_ragged_csv_line_is_located(write_text):
    error = read_error(write_text("b.csv", "x,y,t,u\n0.1,0.2,1,20\n0.1,0.2,2,20,5\n"))
    assert error.kind == "malformed_csv"
    assert "line 3 has 5 fields but the header has 4" in error.message


def test_non_utf8_csv(write_text):
    error = read_error(write_text("b.csv", b"x,y,t,u\n0.1,0.2,1,\xff\xfe\n"))
    assert error.kind == "encoding"
    assert "not UTF-8" in error.message


def test_unsupported_extension(write_text):
    error = read_error(write_text("b.xlsx", "x"))
    assert error.kind == "unsupported_format"


def test_strings_in_numeric_columns_are_not_a_file_error(write_text):
    raw = read_batch(write_text("b.csv", "x,y,t,u\n0.1,0.2,1,abc\n"))
    assert raw.frame.get_column("u").to_list() == ["abc"]


# --- issue 24: errors name what the user dropped; hostile files are bounded ------------------


def test_errors_name_the_users_file_not_the_stored_blob(tmp_path):
    # read_batch is handed the content store's copy, named after its sha256
    blob = tmp_path / ("ab" * 32 + ".csv")
    blob.write_text("x,y,t,u\n0.1,0.2,1,20\n0.1,0.2,2,20,5\n")
    error = read_error(blob, name="field run 3.csv")
    assert error.kind == "malformed_csv"
    assert error.message.startswith("'field run 3.csv' line 3 has 5 fields")
    assert "ab" * 32 not in str(error)


@pytest.mark.parametrize(("encoding", "named"), [
    ("utf-16", "UTF-16"),  # what Excel's "Unicode text" writes: a byte order mark, then LE
    ("utf-16-be", "UTF-16"),  # no byte order mark
    ("utf-32", "UTF-32"),
])
def test_a_utf16_or_utf32_csv_is_reported_as_not_utf8(write_text, encoding, named):
    error = read_error(write_text("b.csv", "x,y,t,u\n0.1,0.2,1,20\n".encode(encoding)))
    assert error.kind == "encoding"
    assert f"'b.csv' is not UTF-8 (looks like {named})" in error.message


def test_a_utf8_byte_order_mark_is_fine(write_text):
    raw = read_batch(write_text("b.csv", "x,y,t,u\n0.1,0.2,1,20\n".encode("utf-8-sig")))
    assert raw.frame.columns == ["row", "x", "y", "t", "u"]


def test_a_parquet_decompression_bomb_is_refused_from_its_footer(tmp_path):
    # 40 MB of zeros in 2 KB of zstd: nothing may be decompressed to find out
    n = 1_000_000
    bomb = pl.DataFrame({c: pl.zeros(n, eager=True) for c in "xytu"}).with_columns(
        pl.lit("s" * 200).alias("lab_note"))
    bomb.write_parquet(tmp_path / "b.parquet", compression="zstd", use_pyarrow=True,
                       pyarrow_options={"use_dictionary": False})
    on_disk = (tmp_path / "b.parquet").stat().st_size
    error = read_error(tmp_path / "b.parquet", max_uncompressed_bytes=10 * 1024**2)
    assert error.kind == "too_large"
    assert "declares" in error.message and "decompression bomb" in error.message
    assert on_disk < 10 * 1024**2  # the file itself is far below the limit
    assert read_batch(tmp_path / "b.parquet").n_rows == n  # the default limit lets it through


def test_numbers_stored_as_text_in_parquet_are_refused(tmp_path):
    clean_frame(5).with_columns(pl.col("u").cast(pl.String)).write_parquet(tmp_path / "b.parquet")
    error = read_error(tmp_path / "b.parquet")
    assert error.kind == "column_type"
    assert "'u' is String in a Parquet file" in error.message


def test_an_overlong_parquet_text_cell_is_refused(tmp_path):
    clean_frame(5).with_columns(pl.lit("s" * 5000).alias("sensor_id")).write_parquet(
        tmp_path / "b.parquet")
    error = read_error(tmp_path / "b.parquet", max_cell_bytes=1024)
    assert error.kind == "cell_too_long"
    assert "'sensor_id' of 5,000 bytes in row 1" in error.message


def test_an_overlong_csv_cell_is_refused_before_parsing(write_text):
    # quoted cells may hold separators and line breaks: they count in the cell's length
    body = 'x,y,t,u,note\n0.1,0.2,1,20,"a,b\nc"\n0.1,0.2,2,20,"' + "z" * 2000 + '"\n'
    error = read_error(write_text("b.csv", body), max_cell_bytes=1024)
    assert error.kind == "cell_too_long"
    assert "'b.csv' has a cell of more than 1,024 bytes on line 4" in error.message
    fine = 'x,y,t,u,note\n0.1,0.2,1,20,"a,b\nc"\n0.1,0.2,2,20,"' + "z" * 1000 + '"\n'
    assert read_batch(write_text("fine.csv", fine), max_cell_bytes=1024).n_rows == 2


def test_a_long_cell_across_read_chunks_is_found(write_text, monkeypatch):
    from heat_platform.data import contract

    monkeypatch.setattr(contract, "_SCAN_CHUNK_BYTES", 64)  # many chunks in a small file
    rows = "".join(f"0.{i},0.2,{i},20\n" for i in range(1, 30))
    path = write_text("b.csv", "x,y,t,u\n" + rows + "0.5,0.2,31," + "9" * 300 + "\n" + rows)
    error = read_error(path, max_cell_bytes=100)
    assert error.kind == "cell_too_long" and "on line 31" in error.message
    assert read_batch(write_text("ok.csv", "x,y,t,u\n" + rows), max_cell_bytes=100).n_rows == 29
