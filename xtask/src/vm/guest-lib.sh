# Shell helpers for scripts run in the guest (/lib/refscope/guest.sh):
# the init script and every generated test script source it.

# wait_for PATH SECONDS: until PATH exists; fails after SECONDS.
wait_for() {
    _i=0
    while [ ! -e "$1" ]; do
        _i=$((_i + 1))
        [ "$_i" -gt $(($2 * 50)) ] && return 1
        usleep 20000
    done
}

# wait_for_data PATH SECONDS: until PATH exists and is not empty.
wait_for_data() {
    _i=0
    while [ ! -s "$1" ]; do
        _i=$((_i + 1))
        [ "$_i" -gt $(($2 * 50)) ] && return 1
        usleep 20000
    done
}

# alive PID: the process runs (exists and is not a zombie).
alive() {
    [ -e "/proc/$1/status" ] && ! grep -q '^State:.*Z' "/proc/$1/status"
}
