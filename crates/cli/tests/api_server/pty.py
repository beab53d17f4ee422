# Runs a command on a new pty (33 rows, 77 columns) for the api tests: argv[1] is a
# JSON list of [expect, send] steps (wait until the output holds `expect`, then type
# `send`), the rest the command. Prints what the command wrote; exits with its code.
# Gives up after 60 s (kills the command, exit 99) so a hung client fails the test.
# A `send` of "\0winsize ROWS COLS" resizes the pty instead of typing (the command
# gets SIGWINCH). With PTY_REPORT_ECHO set, a last line says whether the terminal was
# left with echo on (`[echo on]`: its settings restored) or off.
import fcntl, json, os, select, struct, subprocess, sys, termios, time

steps = json.loads(sys.argv[1])
m, s = os.openpty()
fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 77, 0, 0))
p = subprocess.Popen(sys.argv[2:], stdin=s, stdout=s, stderr=s, start_new_session=True,
                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
report = os.environ.get("PTY_REPORT_ECHO")
held = os.dup(s) if report else None
os.close(s)
out = b""
deadline = time.time() + 60
step = 0
while True:
    while step < len(steps) and steps[step][0].encode() in out:
        send = steps[step][1]
        if send.startswith("\0winsize "):
            rows, cols = map(int, send.split()[1:3])
            fcntl.ioctl(m, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        else:
            os.write(m, send.encode())
        out_mark = len(out)
        step += 1
    if time.time() > deadline:
        p.kill()
        sys.stdout.write(out.decode(errors="replace"))
        sys.exit(99)
    r, _, _ = select.select([m], [], [], 0.5)
    if r:
        try:
            d = os.read(m, 4096)
        except OSError:
            break
        if not d:
            break
        out += d
    elif p.poll() is not None:
        break
rc = p.wait()
sys.stdout.write(out.decode(errors="replace"))
if held is not None:
    echo = termios.tcgetattr(held)[3] & termios.ECHO
    sys.stdout.write("\n[echo on]\n" if echo else "\n[echo off]\n")
sys.exit(rc)
