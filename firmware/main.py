# Entry point on every board: load and check the config and the key, pick the
# board module the config names, run the node. A wrong config or key gives one
# clear line and stops here (no reset loop); the REPL stays usable.

import sys


def main():
    import config

    try:
        cfg = config.load("config.json")
        key = config.load_key(cfg["key_file"])
    except config.ConfigError as exc:
        print("[config] %s" % exc)
        return
    try:
        board = __import__("board_" + cfg["board"])
    except ImportError as exc:
        print("[config] board %r is not supported here (%s)" % (cfg["board"], exc))
        return
    # the checks are done: give their code's RAM back before the node starts
    del config
    sys.modules.pop("config", None)
    import node

    node.Node(board, cfg, key).run()


main()
