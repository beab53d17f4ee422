# Runs a command on a new pty (33 rows, 77 columns) for the api tests: argv[1] is a
# JSON list of [expect, send] steps (wait until the output holds `expect`, then type
# `send`), the rest the command. Prints what the command wrote; exits with its code.
# Gives up after 60 s (kills the command, exit 99) so a hung client fails the test.
import fcntl, json, os, select, struct, subprocess, sys, termios, time

steps = json.loads(sys.argv[1])
m, s = os.openpty()
fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 77, 0, 0))
p = subprocess.Popen(sys.argv[2:], stdin=s, stdout=s, stderr=s, start_new_session=True,
                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
os.close(s)
out = b""
deadline = time.time() + 60
step = 0
while True:
    while step < len(steps) and steps[step][0].encode() in out:
        os.write(m, steps[step][1].encode())
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
sys.exit(rc)
