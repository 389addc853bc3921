# Sourced by test.sh and bench.sh: makes sure a Vulkan driver is present. On a
# Linux machine without one it installs Mesa's software driver (lavapipe,
# package mesa-vulkan-drivers), so GPU code runs, at CPU speed, anywhere.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ "$(uname)" = Linux ] && ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
    echo "No Vulkan driver found: installing Mesa's software Vulkan (lavapipe)."
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q mesa-vulkan-drivers
fi

# Mesa's Vulkan driver warns on every start when no session runtime dir exists.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
