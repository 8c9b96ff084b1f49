"""What the node keeps in flash survives a write cut short at any byte.

A power cut during a write leaves a prefix of the new bytes over the old ones.
These tests cut every write of the sequence counter and of the buffer at every
length, under the real MicroPython unix port, and restart from what is left.
"""

import json

from govedge.tools.field import firmware


def _run(mpy_dir, folder, script):
    # the board's flash is a folder of the test's own
    proc = firmware.run_micropython(script, path=[mpy_dir], cwd=folder)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()
    return proc.stdout.decode()


def test_counter_write_cut_at_any_byte_never_lets_a_number_come_back(mpy_dir, tmp_path):
    out = _run(
        mpy_dir, tmp_path,
        "import counter, json\n"
        "results = []\n"
        "for cut in range(17):\n"
        "    c = counter.FileCounter('seq.dat')\n"
        "    s = counter.Sequence(c, 4)\n"
        "    handed = [s.take() for _ in range(9)]\n"  # reservations up to 12 are on flash
        "    other = 1 - c.slot\n"
        "    new = counter._encode(s.limit + 4)\n"
        "    f = open('seq.dat', 'r+b'); f.seek(16 * other); f.write(new[:cut]); f.close()\n"
        "    again = counter.Sequence(counter.FileCounter('seq.dat'), 4)\n"
        "    results.append([cut, max(handed), again.take()])\n"
        "    import os; os.remove('seq.dat')\n"
        "print(json.dumps(results))\n"
    )
    for cut, last_handed, first_after in json.loads(out):
        assert first_after > last_handed, f"cut at {cut} bytes: {first_after} after {last_handed}"


def test_buffer_write_cut_at_any_byte_loses_only_that_message(mpy_dir, tmp_path):
    out = _run(
        mpy_dir, tmp_path,
        "import buffer, json, os\n"
        "results = []\n"
        "msg = bytes(range(200))\n"
        "for cut in range(0, 216, 5):\n"
        "    b = buffer.Buffer('buf.dat', 8, 256)\n"
        "    for seq in range(5):\n"
        "        b.put(0, seq, msg)\n"
        "    b.delivered(1)\n"
        "    b.save_cursor()\n"
        # the next write, to slot 5, is cut after `cut` bytes
        "    head = buffer.struct.pack('>BBHQ', 0xB5, 0, len(msg), 5)\n"
        "    full = head + buffer.struct.pack('>I', buffer._crc(head, msg)) + msg\n"
        "    f = open('buf.dat', 'r+b'); f.seek(5 * 256); f.write(full[:cut]); f.close()\n"
        "    again = buffer.Buffer('buf.dat', 8, 256)\n"
        "    seqs = [s for s, _ in again.pending]\n"
        "    intact = all(again.oldest() is not None and again.oldest()[2] == msg for _ in [0])\n"
        "    results.append([cut, seqs, again.corrupt, intact, again.pos])\n"
        "    os.remove('buf.dat'); os.remove('buf.dat.sent')\n"
        "print(json.dumps(results))\n"
    )
    for cut, seqs, corrupt, intact, pos in json.loads(out):
        # the delivered ones stay delivered, the pending ones are all there, intact
        assert seqs[:3] == [2, 3, 4], (cut, seqs)
        assert intact
        if seqs == [2, 3, 4]:
            assert pos == 5  # the cut slot is written again next
        else:
            assert seqs == [2, 3, 4, 5] and corrupt == 0  # the whole record made it
