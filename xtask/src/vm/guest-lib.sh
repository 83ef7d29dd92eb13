# Shell helpers for scripts run in the guest (/lib/refscope/guest.sh):
# the init script and every generated test script source it.

# Polling sleeps 0.1 s: a shorter period means a new process every few ms
# while refscope attaches, which on 6.12 under TCG once met its kprobe
# patching of folio_add_new_anon_rmap (a call to address 0).

# wait_for PATH SECONDS: until PATH exists; fails after SECONDS.
wait_for() {
    _i=0
    while [ ! -e "$1" ]; do
        _i=$((_i + 1))
        [ "$_i" -gt $(($2 * 10)) ] && return 1
        sleep 0.1
    done
}

# wait_for_data PATH SECONDS: until PATH exists and is not empty.
wait_for_data() {
    _i=0
    while [ ! -s "$1" ]; do
        _i=$((_i + 1))
        [ "$_i" -gt $(($2 * 10)) ] && return 1
        sleep 0.1
    done
}

# alive PID: the process runs (exists and is not a zombie).
alive() {
    [ -e "/proc/$1/status" ] && ! grep -q '^State:.*Z' "/proc/$1/status"
}
