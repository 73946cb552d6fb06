"""Shell completion: ``kubectl_complete-ferry`` for kubectl, and scripts for bash and zsh.

kubectl 1.26 and newer complete a plugin's arguments by running
``kubectl_complete-<plugin>`` from PATH with the words typed after the
plugin's name, the last one the word being completed (empty for a new word).
It prints one candidate a line (``candidate<TAB>description``), then Cobra's
directive as ``:N`` (4: do not fall back to file names). The bash and zsh
scripts of ``kubectl ferry completion`` ask the same program, for those who run
``kubectl-ferry`` directly. Commands and options come from the parser itself;
names (migrations, checkpoints, nodes, namespaces) from the cluster, briefly:
a slow or absent API server completes nothing rather than hanging the shell.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence

from ferry_kubectl.errors import EXIT_OK, PluginError
from ferry_kubectl.kinds import CHECKPOINT, MIGRATION, NODE_HELPER, Kind
from ferry_kubectl.kube import Cluster, api_client, context_namespace
from ferry_kubectl.session import Env

#: Cobra's ShellCompDirective values.
DEFAULT = 0
NO_FILE = 4
#: Options whose value is a file: the shell completes those itself.
FILE_OPTIONS = {"-f", "--filename", "--kubeconfig", "--output-dir"}
#: Positional arguments completed with the names of a kind, by command.
NAMES: dict[str, Kind] = {
    "watch": MIGRATION,
    "cancel": MIGRATION,
    "logs": MIGRATION,
    "inspect": CHECKPOINT,
    "restore": CHECKPOINT,
    "drain": NODE_HELPER,
}
NODE_OPTIONS = {"--from", "--to", "--node"}

BASH = """\
# bash completion for kubectl-ferry (kubectl 1.26+ completes `kubectl ferry`
# itself through kubectl_complete-ferry). Load it: source <(kubectl ferry completion bash)
_kubectl_ferry() {
    local cur="${COMP_WORDS[COMP_CWORD]}" out directive
    out=$(kubectl_complete-ferry "${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur" 2>/dev/null) || return
    directive=${out##*:}
    out=$(printf '%s\\n' "$out" | sed '$d' | cut -f1)
    COMPREPLY=($(compgen -W "$out" -- "$cur"))
    if [[ ${#COMPREPLY[@]} -eq 0 && $(( directive & 4 )) -eq 0 ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -F _kubectl_ferry kubectl-ferry
"""

ZSH = """\
#compdef kubectl-ferry
# zsh completion for kubectl-ferry (kubectl 1.26+ completes `kubectl ferry`
# itself through kubectl_complete-ferry). Load it: source <(kubectl ferry completion zsh)
_kubectl_ferry() {
    local -a lines completions
    local directive line
    lines=("${(@f)$(kubectl_complete-ferry "${(@)words[2,CURRENT-1]}" "${words[CURRENT]}" \\
        2>/dev/null)}")
    directive=${lines[-1]#:}
    for line in "${(@)lines[1,-2]}"; do
        completions+=("${line//$'\\t'/:}")
    done
    if (( ${#completions} )); then
        _describe 'kubectl-ferry' completions
    elif (( (directive & 4) == 0 )); then
        _files
    fi
}
compdef _kubectl_ferry kubectl-ferry
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH}

Lister = Callable[[Kind, "argparse.Namespace"], list[str]]


def script_command(env: Env) -> int:
    sys.stdout.write(SCRIPTS[env.args.shell])
    return EXIT_OK


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def _commands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """Each command's parser and its help line."""
    found: dict[str, tuple[argparse.ArgumentParser, str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                found[name] = (sub, helps.get(name, ""))
    return found


def _context(words: Sequence[str]) -> argparse.Namespace:
    """The global options already typed, for the cluster the names come from."""
    given = argparse.Namespace(
        namespace=None, kubeconfig=None, context=None, as_user=None, as_group=None
    )
    aliases = {"-n": "namespace", "--namespace": "namespace", "--kubeconfig": "kubeconfig"}
    aliases |= {"--context": "context", "--as": "as_user"}
    for flag, value in itertools.pairwise(words):
        if flag in aliases:
            setattr(given, aliases[flag], value)
    for word in words:
        flag, _, value = word.partition("=")
        if value and flag in aliases:
            setattr(given, aliases[flag], value)
    return given


def complete(
    parser: argparse.ArgumentParser, words: Sequence[str], current: str, names: Lister
) -> tuple[list[str], int]:
    """The candidates for ``current`` after ``words``, and Cobra's directive."""
    commands = _commands(parser)
    command, options = None, _options(parser)
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("-"):
            action = options.get(word)
            skip = action is not None and action.nargs != 0 and "=" not in word
        elif command is None and word in commands:
            command = word
            options |= _options(commands[word][0])
    previous = words[-1] if words else ""
    action = options.get(previous)
    if action is not None and action.nargs != 0:
        if previous in FILE_OPTIONS:
            return [], DEFAULT
        if action.choices:
            return [str(c) for c in action.choices], NO_FILE
        if previous in NODE_OPTIONS:
            return names(NODE_HELPER, _context(words)), NO_FILE
        return [], NO_FILE
    if current.startswith("-"):
        return sorted(f for f in options if f.startswith("--") or len(f) == 2), NO_FILE
    if command is None:
        return [f"{name}\t{help_}" for name, (_, help_) in commands.items()], NO_FILE
    if command == "completion":
        return sorted(SCRIPTS), NO_FILE
    if command in NAMES:
        return names(NAMES[command], _context(words)), NO_FILE
    return [], NO_FILE


def cluster_names(kind: Kind, given: argparse.Namespace) -> list[str]:
    """The names of ``kind`` in the typed (or the context's) namespace; none on any error."""
    try:
        namespace = given.namespace or context_namespace(given.kubeconfig, given.context)
        cluster = Cluster(api_client(given.kubeconfig, given.context, user=given.as_user))
        bodies = cluster.list(kind, (namespace or "default") if kind.namespaced else None)
    except PluginError:
        return []
    return sorted(str(b["metadata"]["name"]) for b in bodies)


def main(argv: Sequence[str] | None = None) -> int:
    """``kubectl_complete-ferry WORD... CURRENT``: candidates, then ``:directive``."""
    # The parser names this module's scripts: imported here, not above.
    from ferry_kubectl.parser import build_parser  # noqa: PLC0415

    words = list(sys.argv[1:] if argv is None else argv)
    current = words.pop() if words else ""
    candidates, directive = complete(build_parser(), words, current, cluster_names)
    for candidate in candidates:
        if candidate.startswith(current):
            sys.stdout.write(candidate + "\n")
    sys.stdout.write(f":{directive}\n")
    return EXIT_OK
