# The simulated board's serial line to the gateway: a pseudo-terminal opened by the test.


class PtyUART:
    """machine.UART over a pseudo-terminal: the wire to the gateway."""

    def __init__(self, path):
        import select

        self.f = open(path, "r+b")
        self.poll = select.poll()
        self.poll.register(self.f, select.POLLIN)

    def read(self, n):
        out = bytearray()
        while len(out) < n and self.poll.poll(0):
            out.extend(self.f.read(1))
        return bytes(out) or None

    def write(self, data):
        self.f.write(data)
