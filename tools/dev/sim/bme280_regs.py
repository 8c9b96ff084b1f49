# A BME280 in a steady world: its register map, fixed, taken from bme280_sim
# after a measurement. Small, so that benchmarks measure the node, not the simulator.


class FixedRegisters:
    """machine.I2C over a BME280 register map (hex) taken from bme280_sim after a measurement."""

    def __init__(self, image_hex):
        import binascii

        self.regs = binascii.unhexlify(image_hex)

    def readfrom_mem(self, addr, reg, n):
        return self.regs[reg:reg + n]

    def writeto_mem(self, addr, reg, buf):
        pass
