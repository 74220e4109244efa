"""Reading an option's value from the command line as the parser reads it."""

from lit_transfer.cli.arguments import command_line_value


def test_a_flag_given_twice_takes_its_last_value_in_either_spelling():
    argv = ["predict", "--model.backbone", "test_resnet", "--model.backbone=test_vit3", "--ckpt_path", "last.ckpt"]
    assert command_line_value(argv, "model", "backbone") == ("--model.backbone", "test_vit3")
    argv += ["--model.init_args.backbone", "resnet18"]
    assert command_line_value(argv, "model", "backbone") == ("--model.init_args.backbone", "resnet18")
    assert command_line_value(["fit", "--model.backbone"], "model", "backbone") == ("--model.backbone", None)
    assert command_line_value(["fit", "--model.backbones", "x", "--data.backbone", "y"], "model", "backbone") is None
