# umqtt.simple 1.3.4 asks for TLS under the module's old name; MicroPython
# firmware of today calls it ssl.
from ssl import *  # noqa: F401,F403
