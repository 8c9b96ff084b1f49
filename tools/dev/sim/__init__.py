"""Simulated parts for tests, benchmarks and the demo: only what cannot exist here.

The sensor chips at register level (bme280_sim), the SDS011 behind its UART
(sds011_sim), and board modules for the MicroPython unix port (board_sim) and
for CPython with the Raspberry Pi's drivers (board_rpi_sim). The modules run
under MicroPython and CPython alike; MicroPython finds them through DIR on its
path, CPython as govedge.tools.dev.sim.
"""

from pathlib import Path

DIR = Path(__file__).resolve().parent
