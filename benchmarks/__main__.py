"""``python -m benchmarks <name>``: experiment harness."""
import sys

from recognition.cli import run_command

BENCHMARKS = {"speed": ("benchmarks.speed", "time per crafting step of each gradient backend"),
              "classification": ("benchmarks.classification",
                                 "CIFAR-10 protection experiments (paper Tables 2-6, 8, 9)"),
              "faces": ("benchmarks.faces", "face recognition under protection: kNN identification + verification"),
              "memory": ("benchmarks.memory", "peak memory of faceguard poison (or protect) against corpus size"),
              "protect-speed": ("benchmarks.protect_speed", "seconds per photo of faceguard protect, by stage"),
              "crafting-costs": ("benchmarks.crafting_costs",
                                 "per ensemble member: forward + backward ms in fp32, bf16, compiled; crafting per face-step"),
              "crafting-levers": ("benchmarks.crafting_levers",
                                  "evasion shortcuts (early stop per photo, SFace every 2nd step): steps, seconds, saved loss"),
              "faces-partial": ("benchmarks.faces_partial",
                                "one person protects their own photos, the rest of the corpus stays clean"),
              "protect-effect": ("benchmarks.protect_effect",
                                 "victims trained on photos saved by faceguard protect (PNG, JPEG) vs crop level"),
              "serve": ("benchmarks.serve", "faceguard serve: photos/s and latency at 1, 2, 4 clients, overhead vs protect"),
              "frontier": ("benchmarks.frontier", "protection against visibility from recognizers results files"),
              "recognizers": ("benchmarks.recognizers",
                              "pretrained recognizers vs real photos protected by faceguard protect: gallery and "
                              "scraper-fit threat models, defenses, quality")}


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m benchmarks", __doc__, BENCHMARKS, argv)


if __name__ == "__main__":
    sys.exit(main())
