import pytest

from itemlm.data.dataset import build_dataset
from itemlm.data.recbole import read_recbole
from itemlm.errors import InputError


def write(folder, name, text, encoding="utf-8"):
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def test_reads_typed_headers_and_token_seq_genres(tmp_path):
    write(tmp_path, "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t100\n1\t11\t5\t90\n")
    write(tmp_path, "toy.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n10\tHeat\t1995\tAction Crime\n11\tCasino\t1995\tDrama\n")
    write(tmp_path, "toy.user", "user_id:token\tage:token\n1\t30\n")
    raw = read_recbole(tmp_path)
    dataset = build_dataset("toy", raw, text_holdout=0.0)
    assert list(dataset.items["genres"]) == ["Action, Crime", "Drama"]
    assert list(dataset.interactions["timestamp"]) == [90, 100]
    assert dataset.users.loc[0, "age"] == "30"


def test_wrong_column_count_names_file_and_line(tmp_path):
    write(tmp_path, "bad.inter", "user_id:token\titem_id:token\n1\t2\n3\t4\t5\n")
    with pytest.raises(InputError, match=r"bad.inter:3: expected 2 tab-separated columns, found 3"):
        read_recbole(tmp_path)


def test_non_numeric_timestamp(tmp_path):
    write(tmp_path, "bad.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t3\tyesterday\n")
    with pytest.raises(InputError, match=r"bad.inter:3: field 'timestamp' must be a number"):
        read_recbole(tmp_path)


def test_bad_encoding_and_empty_file(tmp_path):
    write(tmp_path, "enc.inter", "user_id:token\titem_id:token\n1\tcaf\u00e9\n", encoding="latin-1")
    with pytest.raises(InputError, match=r"enc.inter:2: is not valid UTF-8"):
        read_recbole(tmp_path)
    (tmp_path / "enc.inter").unlink()
    write(tmp_path, "empty.inter", "")
    with pytest.raises(InputError, match="empty file"):
        read_recbole(tmp_path)


def test_missing_header_field_and_missing_folder(tmp_path):
    write(tmp_path, "x.inter", "uid:token\titem_id:token\n1\t2\n")
    with pytest.raises(InputError, match="no 'user_id' field"):
        read_recbole(tmp_path)
    with pytest.raises(InputError, match="no RecBole"):
        read_recbole(tmp_path / "nowhere")
