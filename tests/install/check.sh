#!/bin/sh
# The installed library as a user outside the tree sees it (issue #17): installs BUILD_DIR into a
# temporary prefix, checks that every public header is installed (and no backend header), compiles
# a file including all of them against the prefix with `pkg-config --cflags cpoison`, then builds
# examples/custom_flow and examples/custom_loss with their own Makefiles and runs them on DATA
# (a dataset name or .h5 file; a few images keep it to seconds).
#   tests/install/check.sh BUILD_DIR DATA [WORK_DIR]
# The build must be complete (make build): the install does not rebuild.
set -eu
build=$(cd "$1" && pwd)
data=$2
work=${3:-$(mktemp -d)}
mkdir -p "$work"
src=$(cd "$(dirname "$0")/../.." && pwd)

# Install with a staging root, then point the staged cpoison.pc at where it landed: the same
# files a `meson install` with prefix $stage$prefix would have written.
stage=$work/stage
rm -rf "$stage"
meson install -C "$build" --no-rebuild --destdir "$stage" > "$work/install.log"
pc=$(find "$stage" -name cpoison.pc | head -n 1)
[ -n "$pc" ] || { echo "check.sh: no cpoison.pc installed (see $work/install.log)" >&2; exit 1; }
old_prefix=$(sed -n 's/^prefix=//p' "$pc")
prefix=$stage$old_prefix
sed -i "s|^prefix=.*|prefix=$prefix|" "$pc"
PKG_CONFIG_PATH=$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
export PKG_CONFIG_PATH
include=$prefix/include/cpoison

# Every header of the public folders, and nothing of engine/backend/.
missing=0
for h in $(cd "$src" && find engine models augment algorithms poison -name '*.h' ! -path 'engine/backend/*' | sort); do
  if [ ! -f "$include/$h" ]; then echo "check.sh: public header $h is not installed (add it to public_headers in meson.build)" >&2; missing=1; fi
done
[ "$missing" = 0 ] || exit 1
if [ -d "$include/engine/backend" ]; then echo "check.sh: backend headers were installed" >&2; exit 1; fi

# All public headers in one file, included the way a user writes them, from the prefix only.
all=$work/all_headers.cpp
(cd "$include" && find . -name '*.h' | sort | sed 's|^\./|#include <cpoison/|; s|$|>|') > "$all"
echo 'int main() { return 0; }' >> "$all"
${CXX:-c++} -fsyntax-only $(pkg-config --cflags cpoison) "$all"
echo "check.sh: $(grep -c '#include' "$all") public headers compile from $prefix"

# The examples, built by their own Makefiles in a copy outside the tree.
for ex in custom_flow custom_loss; do
  rm -rf "${work:?}/$ex"
  cp -r "$src/examples/$ex" "$work/$ex"
  make -s -C "$work/$ex" CXXFLAGS=-O0
done
"$work/custom_flow/custom_flow" "$data" 32 0.5 "$work/flow.h5"
"$work/custom_loss/custom_loss" "$data" 32 "$work/loss.h5"
[ -s "$work/flow.h5" ] && [ -s "$work/loss.h5" ]
echo "check.sh: both examples built against $prefix and wrote their poisons"
