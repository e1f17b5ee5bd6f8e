"""Flag classification and the rule compiler."""
import numpy as np
import pytest

from fasttcp import Tracker, compile_model, get_model
from fasttcp.models import (
    ACK,
    CWR,
    ECE,
    FIN,
    FLAG_CLASSES,
    PSH,
    RST,
    SYN,
    URG,
    Model,
    classify_flags,
)

# The combinations Linux's tcp_valid_flags accepts, before PSH/ECE/CWR are masked off.
LINUX_VALID = {SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK,
               ACK | URG}


@pytest.mark.parametrize("flags", range(256))
def test_classify_agrees_with_linux_on_validity(flags):
    legal = flags & ~(PSH | ECE | CWR) in LINUX_VALID
    assert (classify_flags(flags) in {"SYN", "SYNACK", "FIN", "ACK", "RST"}) == legal


@pytest.mark.parametrize("flags, name", [
    (SYN, "SYN"), (SYN | ECE | CWR, "SYN"), (SYN | ACK | ECE, "SYNACK"), (FIN | ACK, "FIN"),
    (PSH | ACK, "ACK"), (RST | ACK, "RST"), (0, "NULL"), (ECE | CWR, "NULL"),
    (FIN | PSH | URG, "XMAS"), (SYN | FIN, "SYNFIN"), (SYN | FIN | ACK, "SYNFIN"),
    (SYN | RST, "SYNRST"), (0xFF, "SYNRST"), (FIN, "FIN_NOACK"), (FIN | PSH, "FIN_NOACK"),
    (URG, "OTHER"), (PSH, "OTHER"), (RST | FIN, "OTHER"), (SYN | ACK | URG, "OTHER"),
])
def test_classify_names(flags, name):
    assert classify_flags(flags) == name


def test_classify_rejects_out_of_range():
    with pytest.raises(ValueError, match="0..255"):
        classify_flags(256)


TINY_ROWS = """
*  SYN|SYNACK|ACK|FIN  o
*  RST  c~
*  SYNFIN|SYNRST|FIN_NOACK|NULL|XMAS|OTHER  iv
"""
TINY_ALIASES = {"o": "OPEN", "c": "CLOSED", "iv": "invalid", "ig": "ignore"}


def test_compile_a_small_model():
    m = compile_model("tiny", ["NEW", "OPEN", "CLOSED"], TINY_ALIASES, TINY_ROWS,
                      timeouts={"OPEN": 30})
    assert m.table.shape == (3, 2, len(FLAG_CLASSES)) and m.table.dtype == np.uint8
    assert m.next_state("OPEN", "resp", "RST") == ("CLOSED", "close_unreplied")
    assert m.next_state("NEW", "orig", "XMAS") == ("invalid", "")
    assert m.timeouts == {"OPEN": 30}
    assert not m.table.flags.writeable
    t = Tracker(m, capacity=8)
    assert t.histogram() == {"NEW": 0, "OPEN": 0, "CLOSED": 0}


@pytest.mark.parametrize("rows, message", [
    ("*  SYN|SYNACK|ACK|FIN  o", r"incomplete: no row for \(orig, RST\)"),
    (TINY_ROWS + "orig SYN o", r"\(orig, SYN\) already given on row 2"),
    (TINY_ROWS.replace("c~", "zz"), "unknown cell 'zz'"),
    (TINY_ROWS.replace("c~", "c!"), "unknown cell 'c!'"),
    (TINY_ROWS.replace("*  RST", "both  RST"), "direction must be orig, resp or"),
    (TINY_ROWS.replace("RST  c~", "RST  c c"), "2 cells for 3 states"),
    (TINY_ROWS.replace("RST", "PSH"), "unknown flag class 'PSH'"),
    ("*  SYN", "expected DIRECTION CLASSES CELLS"),
])
def test_compile_rejects_bad_tables(rows, message):
    with pytest.raises(ValueError, match=message):
        compile_model("tiny", ["NEW", "OPEN", "CLOSED"], TINY_ALIASES, rows)


def test_compile_rejects_bad_aliases_and_classifiers():
    with pytest.raises(ValueError, match="alias 'o' names unknown state"):
        compile_model("tiny", ["NEW"], {"o": "OPEN"}, TINY_ROWS)
    with pytest.raises(ValueError, match="gave unknown class"):
        compile_model("tiny", ["NEW", "OPEN", "CLOSED"], TINY_ALIASES, TINY_ROWS,
                      classify=lambda flags: "BOGUS")


def test_model_checks_its_arrays():
    m = get_model("conntrack")
    with pytest.raises(ValueError, match="table must be uint8"):
        Model("x", m.states, m.flag_classes, m.class_of, m.table.astype(np.int16), m.actions)
    bad = m.table.copy()
    bad[1, 0, 0] = 100
    with pytest.raises(ValueError, match="name no state"):
        Model("x", m.states, m.flag_classes, m.class_of, bad, m.actions)
    with pytest.raises(ValueError, match="unknown states"):
        Model("x", m.states, m.flag_classes, m.class_of, m.table, m.actions, {"NOPE": 1})
    with pytest.raises(ValueError, match="unique"):
        Model("x", ("A", "A"), m.flag_classes, m.class_of, m.table[:2], m.actions[:2])


def test_state_code_and_get_model():
    m = get_model("conntrack")
    assert m.states[m.state_code("ESTABLISHED")] == "ESTABLISHED"
    assert get_model(m) is m
    with pytest.raises(KeyError, match="no state 'NOPE'"):
        m.state_code("NOPE")


def test_conntrack_table_is_complete_and_in_range():
    m = get_model("conntrack")
    n = len(m.states)
    assert ((m.table < n) | (m.table >= 254)).all()
    # a live connection never returns to NONE, the state before the first segment
    assert not (m.table[1:] == 0).any()


def test_default_fills_what_no_row_gives_and_markers_parse():
    m = compile_model("tiny", ["NEW", "OPEN", "CLOSED"], TINY_ALIASES,
                      "orig SYNACK o^\norig ACK o+\n* RST c~", default="iv")
    assert m.next_state("NEW", "orig", "SYNACK") == ("OPEN", "flip")
    assert m.next_state("NEW", "orig", "ACK") == ("OPEN", "pickup")
    assert m.next_state("OPEN", "resp", "FIN") == ("invalid", "")
    with pytest.raises(ValueError, match="default: unknown cell 'zz'"):
        compile_model("tiny", ["NEW"], {"n": "NEW"}, "* SYN n", default="zz")


def test_illegal_classes_default_and_custom():
    m = compile_model("tiny", ["NEW", "OPEN", "CLOSED"], TINY_ALIASES, TINY_ROWS)
    assert m.illegal_classes == ("SYNFIN", "SYNRST", "FIN_NOACK", "NULL", "XMAS", "OTHER")
    m = compile_model("tiny", ["NEW", "OPEN", "CLOSED"], TINY_ALIASES, TINY_ROWS,
                      illegal=["XMAS"])
    assert m.illegal_mask.tolist() == [c == "XMAS" for c in FLAG_CLASSES]
    with pytest.raises(ValueError, match="not flag classes"):
        compile_model("tiny", ["NEW", "OPEN", "CLOSED"], TINY_ALIASES, TINY_ROWS,
                      illegal=["BOGUS"])


def test_tabulate_model_checks_the_rule():
    from fasttcp.models import tabulate_model
    with pytest.raises(ValueError, match="no such state or action"):
        tabulate_model("bad", ["A"], lambda state, direction, cls: ("B", ""))
    with pytest.raises(ValueError, match="no such state or action"):
        tabulate_model("bad", ["A"], lambda state, direction, cls: ("A", "explode"))
    m = tabulate_model("ok", ["A", "B"],
                       lambda state, direction, cls: ("B", "") if cls == "SYN" else ("ignore", ""))
    assert m.next_state("A", "resp", "SYN") == ("B", "") and m.pairs is None


def test_default_is_checked_even_when_unused_and_markers_need_a_state():
    with pytest.raises(ValueError, match="default: unknown cell 'typo'"):
        compile_model("tiny", ["NEW", "OPEN", "CLOSED"], TINY_ALIASES, TINY_ROWS, default="typo")
    with pytest.raises(ValueError, match="marker on 'iv\\+'"):
        compile_model("tiny", ["NEW", "OPEN", "CLOSED"], TINY_ALIASES,
                      TINY_ROWS.replace("  iv", "  iv+"))
