# Entry point on every board: load and check the config, pick the board
# module it names, run the node. A wrong config or key gives one clear line
# and stops here (no reset loop); the REPL stays usable for the technician.

import config


def main():
    try:
        cfg = config.load("config.json")
        board = __import__("board_" + cfg["board"])
    except config.ConfigError as exc:
        print("[config] %s" % exc)
        return
    except ImportError as exc:
        print("[config] board %r is not supported here (%s)" % (cfg["board"], exc))
        return
    import node
    try:
        n = node.Node(board, cfg)
    except config.ConfigError as exc:
        print("[config] %s" % exc)
        return
    n.run()


main()
