#!/usr/bin/env bash
# Dependency policy check (docs/install.md): `pip install whispertune` must keep the torch a GPU user
# already has. In a throwaway venv it installs ANOTHER torch than the tested one (default: PyPI's
# torch 2.12.1, a CUDA 13 build: about 3.5 GB of wheels, 4.7 GB installed), then `pip install REPO`
# without constraints.txt, and checks that torch and its CUDA wheels are unchanged, that pip finds the
# environment consistent and that whispertune imports and runs its CLI. Prints PASS or FAIL; exits 1 on
# FAIL, 2 when the set-up itself (venv, torch) failed.
#
# Usage: scripts/check_dependency_policy.sh [--keep] [--tests] [REPO]   (REPO: default this checkout)
#   --keep    leave the venv (its path is printed)
#   --tests   also run the fast tests there (with pytest and the [embedded] extra, newest allowed versions)
# Env: POLICY_TORCH (default 2.12.1), PYTHON (default python3), POLICY_PIP_CONFIG_FILE (default
#      /dev/null: no machine-wide pip.conf, whose constraints or mirrors would not be a user's).
set -uo pipefail
keep=0; tests=0; repo=""
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    --tests) tests=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) repo=$arg ;;
  esac
done
repo=$(cd "${repo:-$(dirname "$0")/..}" && pwd)
torch_want=${POLICY_TORCH:-2.12.1}
PY=${PYTHON:-python3}
export PIP_CONFIG_FILE=${POLICY_PIP_CONFIG_FILE:-/dev/null} PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_CONSTRAINT PIP_REQUIRE_VIRTUALENV
work=$(mktemp -d "${TMPDIR:-/tmp}/whispertune-policy.XXXXXX")
if [ "$keep" = 1 ]; then echo "policy: venv kept in $work/venv"; else trap 'rm -rf "$work"' EXIT; fi
vpy=$work/venv/bin/python
start=$(date +%s)

torch_set() {  # torch and the CUDA/triton wheels that came with it, name==version, sorted
  "$vpy" -m pip list --format=freeze 2>/dev/null | grep -iE '^(torch==|triton==|nvidia-|cuda-)' | sort
}

echo "policy: $(date -u '+%Y-%m-%d %H:%M UTC'), $("$PY" --version), repo $repo ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'))"
"$PY" -m venv "$work/venv" || { echo "policy: SETUP FAILED (venv)"; exit 2; }
echo "policy: step 1: the user's own torch: pip install torch==$torch_want"
if ! "$vpy" -m pip install -q "torch==$torch_want" >"$work/torch.log" 2>&1; then
  tail -5 "$work/torch.log"; echo "policy: SETUP FAILED (torch==$torch_want not installable here)"; exit 2
fi
before=$("$vpy" -W ignore -c 'import torch; print(torch.__version__)')
before_set=$(torch_set)
echo "policy:   torch $before ($(echo "$before_set" | wc -l) torch/CUDA wheels)"

echo "policy: step 2: pip install $repo   (no constraints file, no extras)"
fail=()
if ! "$vpy" -m pip install "$repo" >"$work/install.log" 2>&1; then
  tail -15 "$work/install.log"; fail+=("pip install failed")
fi
grep -iE '^\s*(Uninstalling|Attempting uninstall: )(torch|nvidia|cuda|triton)' "$work/install.log" | sed 's/^/policy:   pip: /'
installed=$(grep '^Successfully installed' "$work/install.log" | tr ' ' '\n' | grep -E '^(whispertune|transformers|peft|accelerate|bitsandbytes|datasets|torchcodec|ctranslate2|huggingface_hub|tokenizers|numpy)-' | tr '\n' ' ')
[ -n "$installed" ] && echo "policy:   it added: $installed"

after=$("$vpy" -W ignore -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)
after_set=$(torch_set)
echo "policy: step 3: checks"
echo "policy:   torch before $before, after $after"
[ "$after" = "$before" ] || fail+=("torch changed: $before -> $after")
if [ "$after_set" != "$before_set" ]; then
  fail+=("torch/CUDA wheels changed")
  diff <(echo "$before_set") <(echo "$after_set") | sed 's/^/policy:   /'
fi
if out=$("$vpy" -m pip check 2>&1); then echo "policy:   pip check: $out"; else echo "$out" | sed 's/^/policy:   /'; fail+=("pip check"); fi
if out=$("$vpy" -c 'import torch, whispertune, whispertune.model, whispertune.train, whispertune.evaluate, whispertune.export
print("import whispertune", whispertune.__version__, "with torch", torch.__version__)' 2>&1); then
  echo "policy:   $(echo "$out" | tail -1)"
else
  echo "$out" | tail -5 | sed 's/^/policy:   /'; fail+=("import whispertune")
fi
"$work/venv/bin/whispertune" --help >/dev/null 2>"$work/cli.log" && echo "policy:   whispertune --help: ok" \
  || { tail -3 "$work/cli.log"; fail+=("whispertune --help"); }
# torchcodec (the fallback decoder for m4a/aac/webm) declares no torch requirement and needs FFmpeg's
# shared libraries: reported, not judged (a machine without FFmpeg reads wav/flac/mp3 all the same).
tc=$("$vpy" -c 'import torchcodec; from torchcodec.decoders import AudioDecoder; print(torchcodec.__version__)' 2>&1) \
  && echo "policy:   torchcodec $tc loads with torch $after" \
  || echo "policy:   note: torchcodec does not load here ($(echo "$tc" | grep -m1 -iE 'error|could not' | cut -c1-150))"
echo "policy:   resolved: $("$vpy" -m pip list --format=freeze 2>/dev/null | grep -iE '^(transformers|peft|accelerate|bitsandbytes|datasets|torchcodec|ctranslate2|huggingface.hub|numpy)==' | tr '\n' ' ')"

if [ "$tests" = 1 ] && [ ${#fail[@]} -eq 0 ]; then
  echo "policy: step 4: fast tests with these versions (pytest, [embedded] extra)"
  "$vpy" -m pip install -q pytest pytest-timeout "$repo[embedded]" >"$work/tests-install.log" 2>&1 \
    || { tail -5 "$work/tests-install.log"; fail+=("installing the test extras"); }
  [ "$(torch_set)" = "$before_set" ] || fail+=("the [embedded] extra or pytest changed torch")
  (cd "$repo" && HF_HUB_OFFLINE=1 "$vpy" -m pytest -q -p no:cacheprovider -m "not slow" tests 2>&1 | tail -15) \
    | tee "$work/tests.log" | sed 's/^/policy:   /'
  grep -qE '(^| )[0-9]+ passed' "$work/tests.log" && ! grep -qE '[0-9]+ (failed|error)' "$work/tests.log" \
    || fail+=("tests")
fi

echo "policy: $(( $(date +%s) - start )) s"
if [ ${#fail[@]} -eq 0 ]; then
  echo "policy: PASS: torch $before kept; whispertune installs and imports next to it"
  exit 0
fi
echo "policy: FAIL: $(IFS=';'; echo "${fail[*]}")"
exit 1
