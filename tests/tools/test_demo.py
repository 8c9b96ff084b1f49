"""The main job: `govedge demo` runs a whole deployment and loses nothing."""

import subprocess
import sys


import pytest

pytestmark = pytest.mark.e2e  # the product's processes, end to end


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_runs_a_deployment_and_proves_a_reading_on_the_chain(tmp_path, broker):
    # Mosquitto where it is installed; amqtt, the embedded broker, where it is not
    proc = subprocess.run([sys.executable, "-m", "govedge.tools.cli", "demo", "--nodes", "2", "--duration", "14",
                           "--workdir", str(tmp_path), "--broker", broker],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert ("brokers     Mosquitto on" if broker == "mosquitto" else "brokers     amqtt, embedded") in out
    assert "  lost                                    0" in out
    assert "quarantined                             1 (bad_signature)" in out
    for link in ("reading", "device_signature", "batch_path", "epoch_path", "anchor_receipt", "chain"):
        assert f"    ok  {link}" in out, out[-3000:]
    assert "epochs anchored on the chain            " in out
    assert "# tag(18)  COSE_Sign1" in out
