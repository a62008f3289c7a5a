"""Stand-in for ComfyUI's ``folder_paths`` (tests only; ComfyUI cannot be installed here).

Same names and behaviour as ComfyUI's module for what the node pack uses: ``models_dir``,
``folder_names_and_paths`` (name -> ([paths], extensions)), ``add_model_folder_path``,
``get_folder_paths``, ``get_full_path``, ``get_filename_list``, the input/output/temp
directories and ``get_save_image_path`` (ComfyUI's ``<prefix>_<counter:05>_`` counter, subfolders
inside the output folder only). ``reset(base)`` makes ``base`` the ComfyUI root."""

from __future__ import annotations

import os

base_path = ""
models_dir = ""
output_directory = ""
temp_directory = ""
input_directory = ""
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}


def reset(base: str) -> None:
    global base_path, models_dir, output_directory, temp_directory, input_directory
    base_path = str(base)
    models_dir = os.path.join(base_path, "models")
    output_directory = os.path.join(base_path, "output")
    temp_directory = os.path.join(base_path, "temp")
    input_directory = os.path.join(base_path, "input")
    folder_names_and_paths.clear()
    folder_names_and_paths["checkpoints"] = ([os.path.join(models_dir, "checkpoints")], {".safetensors", ".ckpt"})
    folder_names_and_paths["custom_nodes"] = ([os.path.join(base_path, "custom_nodes")], set())
    for d in (models_dir, output_directory, temp_directory, input_directory, os.path.join(base_path, "custom_nodes")):
        os.makedirs(d, exist_ok=True)


def get_output_directory() -> str:
    return output_directory


def get_temp_directory() -> str:
    return temp_directory


def get_input_directory() -> str:
    return input_directory


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    if folder_name in folder_names_and_paths:
        paths = folder_names_and_paths[folder_name][0]
        if is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name: str) -> list[str]:
    paths, extensions = folder_names_and_paths[folder_name]
    found = set()
    for root in paths:
        if not os.path.isdir(root):
            continue
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                rel = os.path.relpath(os.path.join(dirpath, f), root)
                if not extensions or os.path.splitext(f)[1].lower() in extensions:
                    found.add(rel)
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for root in folder_names_and_paths[folder_name][0]:
        path = os.path.join(root, filename)
        if os.path.isfile(path):
            return path
    return None


def get_save_image_path(filename_prefix: str, output_dir: str, image_width=0, image_height=0):
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception("Saving image outside the output folder is not allowed.")

    def counter_of(name: str):
        prefix_len = len(os.path.basename(filename_prefix))
        try:
            digits = int(name[prefix_len + 1:].split("_")[0])
        except ValueError:
            digits = 0
        return digits, name[:prefix_len + 1]

    try:
        counter = max(d for d, p in map(counter_of, os.listdir(full_output_folder))
                      if os.path.normcase(p[:-1]) == os.path.normcase(filename) and p[-1:] == "_") + 1
    except ValueError:
        counter = 1
    except FileNotFoundError:
        os.makedirs(full_output_folder, exist_ok=True)
        counter = 1
    return full_output_folder, filename, counter, subfolder, filename_prefix
